"""The indexed route table answers every request as the old linear scan did (property tests).

The oracle is the table before the index (tests/support/routing_oracle.py);
hypothesis draws route sets and requests over a small alphabet of hosts,
segments and methods so that overlaps, conflicts, 405s and fall-through
between host groups are frequent.  Also: the decision cache never changes an
answer, and stays within its bound.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from edge_api.models import EdgeRouteSpec
from edge_api.routing import MethodNotAllowed, RouteMatch, RouteTable, build_table, compile_rules
from support import routing_oracle

HOSTS = ["a.example.com", "b.a.example.com", "*.example.com", "*.a.example.com", "other.org"]
SEGMENTS = ["a", "b", "users", "v1", ""]
METHOD_SETS = [[], ["GET"], ["POST"], ["GET", "POST"], ["DELETE"]]
REQUEST_HOSTS = [h.replace("*", "x") for h in HOSTS] + ["example.com", "nowhere", ""]
REQUEST_METHODS = ["GET", "HEAD", "POST", "DELETE", "PUT"]


@st.composite
def a_path(draw: st.DrawFn, template: bool = False) -> str:
    choices = [*SEGMENTS, "{id}", "{x}"] if template else SEGMENTS
    segments = draw(st.lists(st.sampled_from(choices), min_size=0, max_size=4))
    return "/" + "/".join(segments)


@st.composite
def a_rule(draw: st.DrawFn) -> dict[str, Any]:
    path_type = draw(st.sampled_from(["Exact", "Prefix", "Template"]))
    path = draw(a_path(template=path_type == "Template"))
    return {"match": {"path": path, "pathType": path_type,
                      "methods": draw(st.sampled_from(METHOD_SETS))},
            "function": draw(st.sampled_from(["f", "g", "h"]))}


@st.composite
def a_route(draw: st.DrawFn) -> EdgeRouteSpec:
    hosts = draw(st.lists(st.sampled_from(HOSTS), max_size=2, unique=True))
    rules = draw(st.lists(a_rule(), min_size=1, max_size=4))
    return EdgeRouteSpec.model_validate({"hosts": hosts, "rules": rules})


routes_strategy = st.lists(a_route(), min_size=1, max_size=12).map(
    lambda specs: [(f"r{i}", spec) for i, spec in enumerate(specs)])
requests_strategy = st.lists(
    st.tuples(st.sampled_from(REQUEST_HOSTS), st.sampled_from(REQUEST_METHODS), a_path()),
    min_size=1, max_size=30)


def answer(table: RouteTable, host: str, method: str, path: str) -> routing_oracle.Answer:
    found = table.lookup(host, method, path)
    if isinstance(found, RouteMatch):
        return found.rule, found.params
    if isinstance(found, MethodNotAllowed):
        return found.allow
    return None


@settings(max_examples=300, deadline=None)
@given(routes_strategy, requests_strategy)
def test_the_index_answers_like_the_linear_scan(
        routes: list[tuple[str, EdgeRouteSpec]], requests: list[tuple[str, str, str]]) -> None:
    table = build_table(routes)
    for host, method, path in requests:
        want = routing_oracle.lookup(table.rules, host, method, path)
        assert answer(table, host, method, path) == want, (host, method, path)
        assert answer(table, host, method, path) == want, "cached answer differs"


@settings(max_examples=200, deadline=None)
@given(routes_strategy)
def test_the_older_of_conflicting_rules_is_kept(routes: list[tuple[str, EdgeRouteSpec]]) -> None:
    every = [rule for name, spec in routes for rule in compile_rules(name, spec)]
    want = [(r.ident, r.host) for r in routing_oracle.kept_rules(every)]
    table = build_table(routes)
    assert [(r.ident, r.host) for r in table.rules] == want
    assert len(table.conflicts) == len(every) - len(want)


def test_the_cache_is_bounded_and_keeps_the_recently_used() -> None:
    spec = EdgeRouteSpec.model_validate({"rules": [
        {"match": {"path": "/p/{id}", "pathType": "Template"}, "function": "f"}]})
    table = build_table([("r", spec)], cache_size=8)
    for i in range(8):
        table.lookup("h", "GET", f"/p/{i}")
    table.lookup("h", "GET", "/p/0")  # used again: now the most recent
    table.lookup("h", "GET", "/p/new")  # evicts the least recent, /p/1
    assert len(table._cache) == 8
    assert ("h", "GET", "/p/0") in table._cache
    assert ("h", "GET", "/p/1") not in table._cache
    long_path = "/p/" + "x" * 1000
    found = table.lookup("h", "GET", long_path)
    assert isinstance(found, RouteMatch) and found.params == (("id", "x" * 1000),)
    assert ("h", "GET", long_path) not in table._cache


def test_a_cached_match_still_picks_backends_by_weight() -> None:
    spec = EdgeRouteSpec.model_validate({"rules": [{"match": {"path": "/"}, "backends": [
        {"function": "a", "weight": 1}, {"function": "b", "weight": 1}]}]})
    table = build_table([("r", spec)])
    picked = set()
    for _ in range(200):
        found = table.lookup("h", "GET", "/")
        assert isinstance(found, RouteMatch)
        picked.add(found.function)
    assert picked == {"a", "b"}
