"""The route table: EdgeRoutes compiled into a pure lookup structure.

Shared by both planes: the runner routes requests with it and the operator
reports conflicts from it, so both agree on what conflicts.

Built by :func:`build_table` whenever the set of routes changes (standalone
manifests or operator ConfigMaps), off the request path, and swapped
atomically; looked up by the data plane (:mod:`edge_runner.http.dataplane`)
once per request.  The rules sit in an index (:mod:`edge_api.routeindex`), so a
lookup costs the same with 1 or 10,000 routes, and the table remembers its
last :data:`CACHE_SIZE` decisions by (host, method, path) (the weighted
backend pick still happens per request).  No I/O, no clock.

Precedence (docs/resources.md): an exact host beats a wildcard host
(``*.example.com``, longer suffix first), which beats a route with no hosts;
the first host group with a rule whose path *and* method match wins.  Within a
group, ``Exact`` beats ``Template`` (more literal segments first), which beats
the longest ``Prefix`` (element-wise, like Kubernetes Ingress).  If rules match
the path but none the method, the answer is 405 with the union of their methods.

Two rules that could answer the same request with the same precedence are a
*conflict*: the rule of the older route is kept (callers pass routes oldest
first: by creationTimestamp then name in a cluster, in load order standalone;
then by rule index), the other is left out of the table, and both are reported
in :attr:`RouteTable.conflicts`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate

from edge_api.models import EdgeRouteSpec
from edge_api.routeindex import ANY_HOST, CompiledRule, HostIndex, Params

__all__ = ["ANY_HOST", "CACHE_SIZE", "CompiledRule", "Conflict", "MethodNotAllowed",
           "RouteMatch", "RouteTable", "build_table", "by_age", "compile_rules"]

#: Decisions a table remembers (least recently used go first).
CACHE_SIZE = 4096
#: Requests whose host and path are longer than this are routed without the
#: cache, so the cache's memory stays bounded (4096 x 512 characters at most).
CACHED_KEY_MAX = 512

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


def _shape(rule: CompiledRule) -> str:
    """The path as matching sees it: template parameter names do not matter."""
    if rule.path_type != "Template":
        return rule.path
    return "/".join("{}" if s.startswith("{") else s for s in rule.segments)


def _overlap(a: CompiledRule, b: CompiledRule) -> bool:
    return not a.methods or not b.methods or bool(a.methods & b.methods)


_Decision = tuple[CompiledRule, Params] | MethodNotAllowed | None


@dataclass(frozen=True, slots=True)
class RouteTable:
    """Immutable lookup structure; replace it whole to change routing."""

    index: HostIndex
    rules: tuple[CompiledRule, ...]
    conflicts: tuple[Conflict, ...]
    cache_size: int = CACHE_SIZE
    _cache: dict[tuple[str, str, str], _Decision] = field(default_factory=dict, repr=False)

    def lookup(self, host: str, method: str, path: str) -> RouteMatch | MethodNotAllowed | None:
        """Route one request; ``host`` without port, lower-case."""
        if len(host) + len(path) > CACHED_KEY_MAX:
            return self._answer(self._decide(host, method, path))
        key = (host, method, path)
        cache = self._cache
        try:
            decision = cache.pop(key)
        except KeyError:
            decision = self._decide(host, method, path)
            if len(cache) >= self.cache_size:
                del cache[next(iter(cache))]  # the least recently used
        cache[key] = decision
        return self._answer(decision)

    @staticmethod
    def _answer(decision: _Decision) -> RouteMatch | MethodNotAllowed | None:
        if isinstance(decision, tuple):
            rule, params = decision
            return RouteMatch(rule, rule.pick(), params)
        return decision

    def _decide(self, host: str, method: str, path: str) -> _Decision:
        allow: set[str] = set()
        for group in self.index.groups_for(host):
            for rule, params in group.candidates(path):
                if rule.allows(method):
                    return rule, params
                allow.update(rule.methods)
            if allow:
                break
        if allow:
            if "GET" in allow:
                allow.add("HEAD")
            return MethodNotAllowed(tuple(sorted(allow)))
        return None

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


def build_table(routes: Sequence[tuple[str, EdgeRouteSpec]],
                cache_size: int = CACHE_SIZE) -> RouteTable:
    """Compile routes, oldest first, into a table, keeping the older of conflicting rules."""
    kept: list[CompiledRule] = []
    conflicts: list[Conflict] = []
    seen: dict[tuple[str, str, str], list[CompiledRule]] = {}
    index = HostIndex()
    for name, spec in routes:
        for rule in compile_rules(name, spec):
            key = (rule.host, rule.path_type, _shape(rule))
            rivals = seen.setdefault(key, [])
            rival = next((r for r in rivals if _overlap(r, rule)), None)
            if rival is not None:
                conflicts.append(Conflict(rival.ident, rule.ident, rule.host, rule.path))
                continue
            rivals.append(rule)
            kept.append(rule)
            index.add(rule)
    return RouteTable(index, tuple(kept), tuple(conflicts), cache_size)


def by_age(routes: Sequence[tuple[str, EdgeRouteSpec, str]]
           ) -> list[tuple[str, EdgeRouteSpec]]:
    """``(name, spec, creationTimestamp)`` oldest first (then by name), for :func:`build_table`.

    RFC 3339 timestamps in UTC as the API server writes them sort as strings; a
    route without one (an older operator's ConfigMap) counts as oldest.
    """
    return [(name, spec) for name, spec, _created in
            sorted(routes, key=lambda item: (item[2], item[0]))]


EMPTY_TABLE = build_table([])

