"""The route table as it was before the index (issue 17): a linear scan, kept as an oracle.

Used by tests/unit/test_routing_index.py only.  Given the rules a table kept (in
the order it kept them), it answers a request the old way: every rule of a host
group in precedence order (exact, then templates by rank, then prefixes longest
first, each stable in kept order), host groups exact, wildcard longest suffix
first, any host.  Slow on purpose; never used by the runner.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from edge_api.routeindex import ANY_HOST, CompiledRule, Params, prefix_matches, template_params

Answer = tuple[CompiledRule, Params] | tuple[str, ...] | None


def _rank(rule: CompiledRule) -> tuple[int, ...]:
    return tuple(1 if s.startswith("{") else 0 for s in rule.segments)


def _candidates(rules: list[CompiledRule], path: str) -> Iterator[tuple[CompiledRule, Params]]:
    for rule in rules:
        if rule.path_type == "Exact" and rule.path == path:
            yield rule, ()
    segments = path.split("/")
    for rule in sorted((r for r in rules if r.path_type == "Template"), key=_rank):
        params = template_params(rule.segments, segments)
        if params is not None:
            yield rule, params
    prefixes = [r for r in rules if r.path_type == "Prefix"]
    for rule in sorted(prefixes, key=lambda r: -len(r.path.rstrip("/"))):
        if prefix_matches(rule.path, path):
            yield rule, ()


def _groups(kept: Sequence[CompiledRule], host: str) -> Iterator[list[CompiledRule]]:
    hosts = list(dict.fromkeys(rule.host for rule in kept))
    if host and not host.startswith("*.") and host in hosts:
        yield [r for r in kept if r.host == host]
    wildcards = sorted((h for h in hosts if h.startswith("*.")), key=lambda h: -len(h))
    for wildcard in wildcards:
        if host.endswith(wildcard[1:]) and len(host) > len(wildcard) - 1:
            yield [r for r in kept if r.host == wildcard]
    if ANY_HOST in hosts:
        yield [r for r in kept if r.host == ANY_HOST]


def lookup(kept: Sequence[CompiledRule], host: str, method: str, path: str) -> Answer:
    """The matched (rule, params), the Allow list of a 405, or None for a 404."""
    allow: set[str] = set()
    for rules in _groups(kept, host):
        for rule, params in _candidates(rules, path):
            if rule.allows(method):
                return rule, params
            allow.update(rule.methods)
        if allow:
            break
    if allow:
        if "GET" in allow:
            allow.add("HEAD")
        return tuple(sorted(allow))
    return None


def _shape(rule: CompiledRule) -> tuple[str, str, str]:
    segments = ("{}" if s.startswith("{") else s for s in rule.segments)
    return rule.host, rule.path_type, "/".join(segments) if rule.segments else rule.path


def kept_rules(rules: Sequence[CompiledRule]) -> list[CompiledRule]:
    """The rules a table keeps from ``rules`` (oldest first): docs/resources.md, "Conflicts"."""
    kept: list[CompiledRule] = []
    for rule in rules:
        if not any(_shape(k) == _shape(rule) and (
                not k.methods or not rule.methods or k.methods & rule.methods) for k in kept):
            kept.append(rule)
    return kept
