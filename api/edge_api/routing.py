"""The route table: EdgeRoutes compiled into a pure lookup structure.

Shared by both planes: the runner routes requests with it and the operator
reports conflicts from it, so both agree on what conflicts.

Built by :func:`build_table` whenever the set of routes changes (standalone
manifests or operator ConfigMaps) and swapped atomically; looked up by the data
plane (:mod:`edge_runner.http.dataplane`) once per request.  No I/O, no clock.

Precedence (docs/resources.md): an exact host beats a wildcard host
(``*.example.com``, longer suffix first), which beats a route with no hosts;
the first host group with a rule whose path *and* method match wins.  Within a
group, ``Exact`` beats ``Template`` (more literal segments first), which beats
the longest ``Prefix`` (element-wise, like Kubernetes Ingress).  If rules match
the path but none the method, the answer is 405 with the union of their methods.

Two rules that could answer the same request with the same precedence are a
*conflict*: the first by (route name, rule index) is kept, the other is left
out of the table, and both are reported in :attr:`RouteTable.conflicts`.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate

from edge_api.models import EdgeRouteSpec

ANY_HOST = ""


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRule:
    """One rule of one route, ready for matching (compared by identity)."""

    route: str
    index: int
    host: str
    path_type: str
    path: str
    methods: frozenset[str]
    functions: tuple[str, ...]
    cumulative_weights: tuple[int, ...]
    segments: tuple[str, ...] = ()

    @property
    def ident(self) -> str:
        """``route/rule-index``: a bounded label value and a stable name in reports."""
        return f"{self.route}/{self.index}"

    def pick(self, rand: float | None = None) -> str:
        """Choose a backend function according to the weights."""
        if len(self.functions) == 1:
            return self.functions[0]
        total = self.cumulative_weights[-1]
        point = (random.random() if rand is None else rand) * total
        return self.functions[bisect.bisect_right(self.cumulative_weights, point)]

    def allows(self, method: str) -> bool:
        return not self.methods or method in self.methods or (
            method == "HEAD" and "GET" in self.methods
        )


@dataclass(frozen=True, slots=True)
class Conflict:
    """Two rules with the same host, path and precedence whose methods overlap."""

    kept: str
    dropped: str
    host: str
    path: str

    def describe(self) -> str:
        host = self.host or "any host"
        return f"{self.dropped} conflicts with {self.kept} on {host} {self.path}; {self.kept} wins"


@dataclass(frozen=True, slots=True)
class RouteMatch:
    rule: CompiledRule
    function: str
    params: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class MethodNotAllowed:
    allow: tuple[str, ...]


@dataclass(slots=True)
class _HostGroup:
    exact: dict[str, list[CompiledRule]] = field(default_factory=dict)
    templates: list[CompiledRule] = field(default_factory=list)
    prefixes: list[CompiledRule] = field(default_factory=list)

    def candidates(self, path: str) -> Iterable[tuple[CompiledRule, tuple[tuple[str, str], ...]]]:
        """Rules matching ``path``, best precedence first."""
        for rule in self.exact.get(path, ()):
            yield rule, ()
        if self.templates:
            segments = path.split("/")
            for rule in self.templates:
                params = _match_template(rule.segments, segments)
                if params is not None:
                    yield rule, params
        for rule in self.prefixes:
            if _prefix_matches(rule.path, path):
                yield rule, ()


def _prefix_matches(prefix: str, path: str) -> bool:
    if prefix == "/":
        return True
    return path == prefix or path.startswith(prefix + "/") or (
        prefix.endswith("/") and path.startswith(prefix)
    )


def _match_template(
    pattern: tuple[str, ...], segments: list[str]
) -> tuple[tuple[str, str], ...] | None:
    if len(pattern) != len(segments):
        return None
    params = []
    for want, got in zip(pattern, segments, strict=True):
        if want.startswith("{"):
            if not got:
                return None
            params.append((want[1:-1], got))
        elif want != got:
            return None
    return tuple(params)


def _template_rank(segments: tuple[str, ...]) -> tuple[int, ...]:
    return tuple(1 if s.startswith("{") else 0 for s in segments)


def _shape(rule: CompiledRule) -> str:
    """The path as matching sees it: template parameter names do not matter."""
    if rule.path_type != "Template":
        return rule.path
    return "/".join("{}" if s.startswith("{") else s for s in rule.segments)


def _overlap(a: CompiledRule, b: CompiledRule) -> bool:
    return not a.methods or not b.methods or bool(a.methods & b.methods)


@dataclass(frozen=True, slots=True)
class RouteTable:
    """Immutable lookup structure; replace it whole to change routing."""

    by_host: dict[str, _HostGroup]
    wildcards: tuple[tuple[str, _HostGroup], ...]
    any_host: _HostGroup | None
    rules: tuple[CompiledRule, ...]
    conflicts: tuple[Conflict, ...]

    def lookup(self, host: str, method: str, path: str) -> RouteMatch | MethodNotAllowed | None:
        """Route one request; ``host`` without port, lower-case."""
        allow: set[str] = set()
        for group in self._groups_for(host):
            for rule, params in group.candidates(path):
                if rule.allows(method):
                    return RouteMatch(rule, rule.pick(), params)
                allow.update(rule.methods)
            if allow:
                break
        if allow:
            if "GET" in allow:
                allow.add("HEAD")
            return MethodNotAllowed(tuple(sorted(allow)))
        return None

    def _groups_for(self, host: str) -> Iterable[_HostGroup]:
        exact = self.by_host.get(host)
        if exact is not None:
            yield exact
        for suffix, group in self.wildcards:
            if host.endswith(suffix) and len(host) > len(suffix):
                yield group
        if self.any_host is not None:
            yield self.any_host


def compile_rules(name: str, spec: EdgeRouteSpec) -> list[CompiledRule]:
    """Flatten one EdgeRoute into rules, one per (host, rule)."""
    compiled = []
    for index, rule in enumerate(spec.rules):
        targets = [b for b in rule.targets() if b.weight > 0]
        for host in spec.hosts or [ANY_HOST]:
            path = rule.match.path
            compiled.append(
                CompiledRule(
                    route=name,
                    index=index,
                    host=host.lower(),
                    path_type=rule.match.path_type,
                    path=path,
                    methods=frozenset(rule.match.methods),
                    functions=tuple(t.function for t in targets),
                    cumulative_weights=tuple(accumulate(t.weight for t in targets)),
                    segments=tuple(path.split("/")) if rule.match.path_type == "Template" else (),
                )
            )
    return compiled


def build_table(routes: Sequence[tuple[str, EdgeRouteSpec]]) -> RouteTable:
    """Compile routes into a table, keeping the first of conflicting rules."""
    kept: list[CompiledRule] = []
    conflicts: list[Conflict] = []
    seen: dict[tuple[str, str, str], list[CompiledRule]] = {}
    for name, spec in sorted(routes, key=lambda item: item[0]):
        for rule in compile_rules(name, spec):
            key = (rule.host, rule.path_type, _shape(rule))
            rivals = seen.setdefault(key, [])
            rival = next((r for r in rivals if _overlap(r, rule)), None)
            if rival is not None:
                conflicts.append(Conflict(rival.ident, rule.ident, rule.host, rule.path))
                continue
            rivals.append(rule)
            kept.append(rule)
    groups: dict[str, _HostGroup] = {}
    for rule in kept:
        group = groups.setdefault(rule.host, _HostGroup())
        if rule.path_type == "Exact":
            group.exact.setdefault(rule.path, []).append(rule)
        elif rule.path_type == "Template":
            group.templates.append(rule)
        else:
            group.prefixes.append(rule)
    for group in groups.values():
        group.templates.sort(key=lambda r: _template_rank(r.segments))
        group.prefixes.sort(key=lambda r: -len(r.path.rstrip("/")))
    wildcards = sorted(
        ((key[1:], group) for key, group in groups.items() if key.startswith("*.")),
        key=lambda item: -len(item[0]),
    )
    return RouteTable(
        by_host={k: g for k, g in groups.items() if k and not k.startswith("*.")},
        wildcards=tuple(wildcards),
        any_host=groups.get(ANY_HOST),
        rules=tuple(kept),
        conflicts=tuple(conflicts),
    )


EMPTY_TABLE = build_table([])
