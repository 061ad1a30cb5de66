"""The route table: matching, precedence, 404/405 and conflicts (pure code)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from edge_api.models import EdgeRouteSpec
from edge_api.routing import MethodNotAllowed, RouteMatch, RouteTable, build_table, by_age


def spec(*rules: dict[str, Any], hosts: list[str] | None = None) -> EdgeRouteSpec:
    return EdgeRouteSpec.model_validate({"hosts": hosts or [], "rules": list(rules)})


def rule(path: str, function: str, path_type: str = "Prefix", methods: list[str] | None = None
         ) -> dict[str, Any]:
    return {"match": {"path": path, "pathType": path_type, "methods": methods or []},
            "function": function}


def target(table: RouteTable, path: str, method: str = "GET", host: str = "x") -> str | None:
    found = table.lookup(host, method, path)
    return found.function if isinstance(found, RouteMatch) else None


def test_prefix_is_element_wise() -> None:
    table = build_table([("r", spec(rule("/hello", "h"), rule("/", "root")))])
    assert target(table, "/hello") == "h"
    assert target(table, "/hello/x/y") == "h"
    assert target(table, "/helloworld") == "root"
    assert target(table, "/") == "root"


def test_longest_prefix_wins() -> None:
    table = build_table([("a", spec(rule("/api", "api"))), ("b", spec(rule("/api/v2", "v2")))])
    assert target(table, "/api/v2/users") == "v2"
    assert target(table, "/api/v1/users") == "api"


def test_exact_beats_template_beats_prefix() -> None:
    table = build_table([("r", spec(
        rule("/users", "prefix"),
        rule("/users/{id}", "template", "Template"),
        rule("/users/me", "exact", "Exact"),
    ))])
    assert target(table, "/users/me") == "exact"
    assert target(table, "/users/42") == "template"
    assert target(table, "/users/42/posts") == "prefix"


def test_template_captures_and_literal_segments_first() -> None:
    table = build_table([("r", spec(
        rule("/u/{id}/posts/{post}", "any", "Template"),
        rule("/u/{id}/posts/latest", "latest", "Template"),
    ))])
    found = table.lookup("x", "GET", "/u/7/posts/3")
    assert isinstance(found, RouteMatch)
    assert found.function == "any"
    assert found.params == (("id", "7"), ("post", "3"))
    assert target(table, "/u/7/posts/latest") == "latest"
    assert target(table, "/u//posts/3") is None


def test_host_precedence_and_fallthrough() -> None:
    table = build_table([
        ("any", spec(rule("/", "any"))),
        ("wild", spec(rule("/", "wild"), hosts=["*.example.com"])),
        ("deeper", spec(rule("/", "deeper"), hosts=["*.api.example.com"])),
        ("exact", spec(rule("/only", "exact"), hosts=["a.example.com"])),
    ])
    assert target(table, "/only", host="a.example.com") == "exact"
    assert target(table, "/other", host="a.example.com") == "wild"
    assert target(table, "/", host="v1.api.example.com") == "deeper"
    assert target(table, "/", host="example.com") == "any"
    assert target(table, "/", host="elsewhere.org") == "any"


def test_method_not_allowed_lists_allow() -> None:
    table = build_table([("r", spec(
        rule("/items", "read", methods=["GET"]), rule("/items", "write", "Exact", ["POST"]),
    ))])
    assert target(table, "/items", "POST") == "write"
    assert target(table, "/items", "GET") == "read"
    assert target(table, "/items", "HEAD") == "read"
    found = table.lookup("x", "DELETE", "/items")
    assert isinstance(found, MethodNotAllowed)
    assert found.allow == ("GET", "HEAD", "POST")
    assert table.lookup("x", "GET", "/nothing") is None


def test_conflicts_are_reported_and_the_oldest_route_wins() -> None:
    # build_table takes routes oldest first: b-route is the oldest here.
    table = build_table([
        ("b-route", spec(rule("/x", "b"))),
        ("a-route", spec(rule("/x", "a"), rule("/t/{id}", "t1", "Template"))),
        ("c-route", spec(rule("/t/{name}", "t2", "Template"),
                         rule("/x", "c-post", methods=["POST"]))),
    ])
    described = sorted(c.describe() for c in table.conflicts)
    assert described == [
        "a-route/0 conflicts with b-route/0 on any host /x; b-route/0 wins",
        "c-route/0 conflicts with a-route/1 on any host /t/{name}; a-route/1 wins",
        "c-route/1 conflicts with b-route/0 on any host /x; b-route/0 wins",
    ]
    assert target(table, "/x") == "b"


def test_by_age_orders_by_creation_then_name_not_by_name_alone() -> None:
    routes = [("a-new", spec(rule("/x", "new")), "2026-11-30T10:00:00Z"),
              ("z-old", spec(rule("/x", "old")), "2026-11-30T09:59:59Z"),
              ("b-twin", spec(rule("/x", "twin")), "2026-11-30T10:00:00Z")]
    assert [name for name, _spec in by_age(routes)] == ["z-old", "a-new", "b-twin"]
    table = build_table(by_age(routes))
    assert target(table, "/x") == "old"
    assert {c.dropped for c in table.conflicts} == {"a-new/0", "b-twin/0"}


def test_disjoint_methods_do_not_conflict() -> None:
    table = build_table([("r", spec(
        rule("/x", "get", methods=["GET"]), rule("/x", "post", methods=["POST"]),
    ))])
    assert table.conflicts == ()
    assert target(table, "/x", "POST") == "post"


@pytest.mark.parametrize("draws", [4000])
def test_weighted_backends(draws: int) -> None:
    table = build_table([("r", spec({"match": {"path": "/"}, "backends": [
        {"function": "a", "weight": 90}, {"function": "b", "weight": 10},
        {"function": "never", "weight": 0}]}))])
    chosen = Counter(target(table, "/") for _ in range(draws))
    assert set(chosen) == {"a", "b"}
    assert 0.85 < chosen["a"] / draws < 0.95
    only = table.rules[0]
    assert only.pick(0.0) == "a"
    assert only.pick(0.95) == "b"


# -- edges of matching and precedence (docs/resources.md, "Route precedence") ---------------


def test_a_prefix_with_a_trailing_slash_matches_below_it() -> None:
    table = build_table([("r", spec(rule("/api/", "api"), rule("/", "root")))])
    assert target(table, "/api/x") == "api"
    assert target(table, "/api/") == "api"
    assert target(table, "/api") == "root"  # not below /api/
    assert target(table, "/apix") == "root"


def test_a_wildcard_host_needs_a_label_before_its_suffix() -> None:
    table = build_table([("w", spec(rule("/", "w"), hosts=["*.example.com"]))])
    assert target(table, "/", host="a.example.com") == "w"
    assert target(table, "/", host="a.b.example.com") == "w"
    for other in ("example.com", ".example.com", "badexample.com", "a.example.org"):
        assert target(table, "/", host=other) is None, other


def test_the_longest_wildcard_suffix_wins_whatever_the_names() -> None:
    table = build_table([
        ("a", spec(rule("/", "short"), hosts=["*.example.com"])),
        ("b", spec(rule("/", "long"), hosts=["*.z.example.com"])),
    ])
    assert target(table, "/", host="x.z.example.com") == "long"
    assert target(table, "/", host="x.y.example.com") == "short"


def test_a_match_names_its_rule_and_captures() -> None:
    table = build_table([("r", spec(rule("/x", "a"), rule("/u/{id}", "b", "Template")))])
    found = table.lookup("h", "GET", "/u/7")
    assert isinstance(found, RouteMatch)
    assert (found.rule.ident, found.function, found.params) == ("r/1", "b", (("id", "7"),))


def test_methods_overlap_unless_both_rules_list_disjoint_ones() -> None:
    def conflicts(first: list[str], second: list[str]) -> int:
        return len(build_table([("a", spec(rule("/p", "a", methods=first))),
                                ("b", spec(rule("/p", "b", methods=second)))]).conflicts)

    assert conflicts(["GET"], []) == 1  # no methods: every method
    assert conflicts([], ["GET"]) == 1
    assert conflicts(["GET", "POST"], ["POST"]) == 1
    assert conflicts(["GET"], ["POST"]) == 0


def test_a_conflict_names_its_host() -> None:
    table = build_table([("a", spec(rule("/p", "a"), hosts=["h.example.com"])),
                         ("b", spec(rule("/p", "b"), hosts=["h.example.com"]))])
    [conflict] = table.conflicts
    assert (conflict.kept, conflict.dropped, conflict.host, conflict.path) == (
        "a/0", "b/0", "h.example.com", "/p")
    assert conflict.describe() == "b/0 conflicts with a/0 on h.example.com /p; a/0 wins"


def test_three_weighted_backends_each_get_their_share() -> None:
    backends = [{"function": name, "weight": 1} for name in ("a", "b", "c")]
    table = build_table([("r", spec({"match": {"path": "/"}, "backends": backends}))])
    [compiled] = table.rules
    picks = [compiled.pick(rand=point) for point in (0.0, 0.34, 0.67, 0.99)]
    assert picks == ["a", "b", "c", "c"]


def test_a_backend_of_weight_zero_is_no_target() -> None:
    backends = [{"function": "off", "weight": 0}, {"function": "on", "weight": 2}]
    table = build_table([("r", spec({"match": {"path": "/"}, "backends": backends}))])
    [compiled] = table.rules
    assert compiled.functions == ("on",)
    assert {compiled.pick(rand=point / 10) for point in range(10)} == {"on"}
