"""The route index: compiled rules arranged so a lookup costs the same at 1 or 10,000 routes.

Part of the route table (:mod:`edge_api.routing` builds it and walks it once
per request).  One job: given a host and a path, list the rules that match, in
precedence order, touching only rules that can match:

* hosts: a dict of exact hosts, a dict of wildcard suffixes (``*.example.com``
  is ``.example.com``; a host tries its own suffixes at each dot, longest
  first) and the group of routes without hosts;
* within a host group: ``Exact`` rules in a dict by path; ``Template`` rules in
  a segment trie walked literal child first, so matching templates come out
  in the order "more literal segments first, comparing from the left"; and
  ``Prefix`` rules in a dict by prefix, looked up for each prefix the path can
  have (the path's ``/`` boundaries), longest first.

Rules of equal precedence come out in the order they were added (the table
adds the oldest route first).  Pure: no I/O, no clock.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

ANY_HOST = ""

Params = tuple[tuple[str, str], ...]


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


def prefix_matches(prefix: str, path: str) -> bool:
    """Element-wise prefix match (docs/resources.md)."""
    if prefix == "/":
        return True
    return path == prefix or path.startswith(prefix + "/") or (
        prefix.endswith("/") and path.startswith(prefix)
    )


def prefix_rank(rule: CompiledRule) -> int:
    """Longer prefixes first: the length without a trailing ``/``."""
    return len(rule.path.rstrip("/"))


def is_param(segment: str) -> bool:
    return segment.startswith("{")


def template_params(pattern: tuple[str, ...], segments: list[str]) -> Params | None:
    """The captures if ``pattern`` matches the path's ``segments``, else None."""
    if len(pattern) != len(segments):
        return None
    params = []
    for want, got in zip(pattern, segments, strict=True):
        if is_param(want):
            if not got:
                return None
            params.append((want[1:-1], got))
        elif want != got:
            return None
    return tuple(params)


def _prefixes_of(path: str) -> Iterator[str]:
    """Every prefix string that can match ``path`` (a superset; callers check)."""
    yield "/"
    yield path
    start = path.find("/")
    while start != -1:
        yield path[:start]
        yield path[:start + 1]
        start = path.find("/", start + 1)


@dataclass(slots=True)
class _TemplateNode:
    literal: dict[str, _TemplateNode] = field(default_factory=dict)
    param: _TemplateNode | None = None
    rules: list[CompiledRule] = field(default_factory=list)


@dataclass(slots=True)
class HostGroup:
    """The rules of one host entry, indexed by path."""

    exact: dict[str, list[CompiledRule]] = field(default_factory=dict)
    templates: _TemplateNode = field(default_factory=_TemplateNode)
    prefixes: dict[str, list[tuple[int, int, CompiledRule]]] = field(default_factory=dict)
    _count: int = 0

    def add(self, rule: CompiledRule) -> None:
        """Add a rule after those already added (equal precedence: earlier wins)."""
        self._count += 1
        if rule.path_type == "Exact":
            self.exact.setdefault(rule.path, []).append(rule)
        elif rule.path_type == "Template":
            node = self.templates
            for segment in rule.segments:
                if is_param(segment):
                    if node.param is None:
                        node.param = _TemplateNode()
                    node = node.param
                else:
                    node = node.literal.setdefault(segment, _TemplateNode())
            node.rules.append(rule)
        else:
            self.prefixes.setdefault(rule.path, []).append((-prefix_rank(rule), self._count, rule))

    def candidates(self, path: str) -> Iterator[tuple[CompiledRule, Params]]:
        """Rules matching ``path``, best precedence first."""
        for rule in self.exact.get(path, ()):
            yield rule, ()
        if self.templates.literal or self.templates.param is not None:
            segments = path.split("/")
            for rule in _walk(self.templates, segments, 0):
                params = template_params(rule.segments, segments)
                if params is not None:
                    yield rule, params
        if self.prefixes:
            found = []
            for prefix in set(_prefixes_of(path)):
                entries = self.prefixes.get(prefix)
                if entries is not None and prefix_matches(prefix, path):
                    found.extend(entries)
            found.sort(key=lambda entry: entry[:2])
            for _rank, _order, rule in found:
                yield rule, ()


def _walk(node: _TemplateNode, segments: list[str], depth: int) -> Iterator[CompiledRule]:
    """Templates whose shape matches ``segments``: literal before parameter, left to right."""
    if depth == len(segments):
        yield from node.rules
        return
    segment = segments[depth]
    child = node.literal.get(segment)
    if child is not None:
        yield from _walk(child, segments, depth + 1)
    if node.param is not None and segment:
        yield from _walk(node.param, segments, depth + 1)


@dataclass(slots=True)
class HostIndex:
    """Host groups by exact host, by wildcard suffix, and the group for any host."""

    exact: dict[str, HostGroup] = field(default_factory=dict)
    wildcards: dict[str, HostGroup] = field(default_factory=dict)
    any_host: HostGroup | None = None

    def add(self, rule: CompiledRule) -> None:
        self.group(rule.host).add(rule)

    def group(self, host: str) -> HostGroup:
        if host == ANY_HOST:
            if self.any_host is None:
                self.any_host = HostGroup()
            return self.any_host
        if host.startswith("*."):
            return self.wildcards.setdefault(host[1:], HostGroup())
        return self.exact.setdefault(host, HostGroup())

    def groups_for(self, host: str) -> Iterator[HostGroup]:
        """The groups a request for ``host`` tries, in precedence order."""
        exact = self.exact.get(host)
        if exact is not None:
            yield exact
        if self.wildcards:
            dot = host.find(".", 1)
            while dot != -1:
                group = self.wildcards.get(host[dot:])
                if group is not None:
                    yield group
                dot = host.find(".", dot + 1)
        if self.any_host is not None:
            yield self.any_host
