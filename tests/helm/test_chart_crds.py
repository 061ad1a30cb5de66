"""The chart's crds/ is a copy of the repo's crds/ (the source of truth).

Helm installs the chart's crds/ before any template. When this test fails,
refresh the copy: cp crds/*.yaml charts/edge-runner/crds/
"""

from __future__ import annotations

from support.helm import CHART_DIR, REPO_DIR

REPO_CRDS = REPO_DIR / "crds"
CHART_CRDS = CHART_DIR / "crds"
FIX = "run: cp crds/*.yaml charts/edge-runner/crds/"


def test_chart_crds_are_the_repo_crds() -> None:
    repo = {p.name: p.read_bytes() for p in sorted(REPO_CRDS.glob("*.yaml"))}
    chart = {p.name: p.read_bytes() for p in sorted(CHART_CRDS.iterdir()) if p.is_file()}
    assert repo, f"no CRDs in {REPO_CRDS}"
    assert sorted(chart) == sorted(repo), f"the chart's crds/ has other files; {FIX}"
    stale = [name for name in repo if chart[name] != repo[name]]
    assert not stale, f"the chart's copies of {stale} differ from crds/; {FIX}"
