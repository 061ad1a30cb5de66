"""Every document the repository cites exists in it: docs/ pages named in code and
docs, and the relative links of every Markdown file."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from support.wasm import REPO_ROOT

CITATION = re.compile(r"\bdocs/[\w./-]+\.md\b")
LINK = re.compile(r"\]\(([\w./-]+)(?:#[\w-]*)?\)")


def tracked() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=REPO_ROOT, check=True, capture_output=True,
                           text=True).stdout.split()
    return [REPO_ROOT / n for n in names if Path(n).suffix in {".md", ".py", ".yaml", ".sh",
                                                               ".rs", ".toml", ".json", ".tpl"}
            or Path(n).name == "Makefile"]


def test_cited_docs_pages_exist() -> None:
    missing = {
        f"{path.relative_to(REPO_ROOT)}: {cited}"
        for path in tracked() if path.exists()
        for cited in CITATION.findall(path.read_text(errors="replace"))
        if not (REPO_ROOT / cited).exists()
    }
    assert missing == set()


def test_relative_markdown_links_resolve() -> None:
    missing = set()
    for path in tracked():
        if path.suffix != ".md" or not path.exists():
            continue
        for target in LINK.findall(path.read_text()):
            if re.match(r"^[a-z]+:", target):  # https:, mailto:
                continue
            if not (path.parent / target).exists():
                missing.add(f"{path.relative_to(REPO_ROOT)}: {target}")
    assert missing == set()


def test_no_file_cites_the_design_brief_outside_the_repository() -> None:
    citing = {str(p.relative_to(REPO_ROOT)) for p in tracked()
              if p.exists() and p.name != "test_doc_links.py"
              and re.search(r"DESIGN\.md|\.\./shared/", p.read_text(errors="replace"))}
    assert citing == set()
