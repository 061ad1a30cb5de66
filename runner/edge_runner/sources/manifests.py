"""Standalone mode: functions and routes from a folder of YAML manifests.

:func:`load_folder` reads every ``*.yaml``/``*.yml`` file under a folder (all
documents of multi-document files), parses EdgeFunctions and EdgeRoutes with the
shared models and resolves module sources into bytes, giving a
:class:`DesiredState`.  :func:`watch_folder` re-applies it to the catalog when
any file changes (including the ``.wasm`` files manifests point at).  A broken
file or function is reported and never stops the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import watchfiles
import yaml

from edge_api.models import EdgeFunction, EdgeRoute, ManifestError, parse_manifest
from edge_runner.invoke.catalog import Catalog, DesiredState, FunctionSource

log = logging.getLogger("edge_runner.sources.manifests")

SKIPPED_DIRS = frozenset({"target", "node_modules", ".git", "__pycache__"})
MAX_MODULE_BYTES = 64 * 2**20


def manifest_files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if (
            path.suffix in (".yaml", ".yml")
            and path.is_file()
            and not SKIPPED_DIRS.intersection(path.relative_to(folder).parts)
        ):
            yield path


def _read_documents(path: Path) -> Iterator[Any]:
    with path.open("rb") as handle:
        yield from yaml.safe_load_all(handle)


def _is_ours(document: Any) -> bool:
    return isinstance(document, dict) and str(document.get("apiVersion", "")).startswith(
        "edgerunner.dev/"
    )


def _resolve_module(function: EdgeFunction, manifest: Path, files: set[Path]) -> bytes:
    source = function.spec.source
    if source.inline is not None:
        return source.inline_bytes()
    if source.path is not None:
        module_path = (manifest.parent / source.path).resolve()
        files.add(module_path)
        if not module_path.is_file():
            raise ManifestError(f"spec.source.path: {module_path} does not exist")
        if module_path.stat().st_size > MAX_MODULE_BYTES:
            raise ManifestError(f"spec.source.path: {module_path} is over {MAX_MODULE_BYTES} bytes")
        return module_path.read_bytes()
    kind = next(k for k in ("configMapRef", "url", "oci") if _field(source, k) is not None)
    raise ManifestError(
        f"spec.source.{kind} needs a cluster; standalone mode reads source.path or source.inline"
    )


def _field(source: Any, camel: str) -> Any:
    return getattr(source, {"configMapRef": "config_map_ref"}.get(camel, camel))


def load_folder(folder: Path) -> DesiredState:
    """Read all manifests under ``folder`` into a desired state (never raises for content)."""
    state = DesiredState()
    seen: dict[str, str] = {}
    for path in manifest_files(folder):
        where = str(path.relative_to(folder))
        try:
            documents = list(_read_documents(path))
        except (OSError, yaml.YAMLError) as exc:
            state.errors.append(f"{where}: cannot read YAML: {exc}")
            continue
        for number, document in enumerate(documents, start=1):
            if document is None or not _is_ours(document):
                continue
            origin = f"{where}#{number}"
            _add_document(state, document, path, origin, seen)
    return state


def _add_document(
    state: DesiredState, document: Any, path: Path, origin: str, seen: dict[str, str]
) -> None:
    try:
        item = parse_manifest(document)
    except ManifestError as exc:
        name = (document.get("metadata") or {}).get("name")
        if document.get("kind") == "EdgeFunction" and isinstance(name, str) and name not in seen:
            seen[name] = origin
            state.functions.append(FunctionSource(name, None, None, origin, f"{origin}: {exc}"))
        else:
            state.errors.append(f"{origin}: {exc}")
        return
    name = item.metadata.name
    if isinstance(item, EdgeRoute):
        state.routes.append((name, item.spec))
        return
    if name in seen:
        state.errors.append(f"{origin}: EdgeFunction {name} is also defined in {seen[name]}")
        return
    seen[name] = origin
    try:
        wasm = _resolve_module(item, path, state.files)
    except (ManifestError, OSError) as exc:
        state.functions.append(FunctionSource(name, item.spec, None, origin, f"{origin}: {exc}"))
        return
    state.functions.append(FunctionSource(name, item.spec, wasm, origin))


def _watched(folder: Path, name: str) -> bool:
    try:
        parts = Path(name).resolve().relative_to(folder.resolve()).parts
    except ValueError:
        return True
    return not SKIPPED_DIRS.intersection(parts)


async def watch_folder(folder: Path, catalog: Catalog, stop: asyncio.Event) -> None:
    """Apply the folder now, then again after every change until ``stop`` is set.

    Module files outside ``folder`` that manifests point at are watched too;
    when that set changes the watch is restarted with the new set.
    """
    loop = asyncio.get_running_loop()
    state = await loop.run_in_executor(None, load_folder, folder)
    await catalog.apply(state)
    while not stop.is_set():
        outside = sorted({p.parent for p in state.files if not p.is_relative_to(folder.resolve())})
        watched = [folder, *(p for p in outside if p.is_dir())]
        async for changes in watchfiles.awatch(
            *watched, stop_event=stop, debounce=200, step=50, recursive=True,
            watch_filter=lambda _change, name: _watched(folder, name),
        ):
            log.info("manifests changed (%d files); reloading", len(changes))
            previous = state.files
            state = await loop.run_in_executor(None, load_folder, folder)
            await catalog.apply(state)
            if state.files != previous:
                break
