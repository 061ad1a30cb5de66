"""What the operator's resync may skip, in process (edge_operator.rest): the pure decision,
which sources must be resolved again, and the watch's view of the ConfigMaps."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from edge_operator.conditions import Want
from edge_operator.rest import (
    UNSEEN,
    Done,
    Inputs,
    RestState,
    must_recheck_function,
    must_recheck_route,
    route_missing,
    unchanged,
)

READY = Want("Ready", True, "Published", "published as configmap/edgefn-a")
FAILED = Want("Ready", False, "FetchFailed", "GET: HTTP 503")
INPUTS = Inputs("uid-1", 1)
DONE = Done(INPUTS, "sha256:h1", {"handoff": "sha256:h1"}, (READY,))
KEY = ("EdgeFunction", "ns", "a")
DIGEST = "sha256:" + "0" * 64


def skip(done: Done | None = DONE, inputs: Inputs = INPUTS, *, published: str | None =
         "sha256:h1", status_intact: bool = True, recheck: bool = False) -> bool:
    return unchanged(done, inputs, published=published, status_intact=status_intact,
                     recheck=recheck)


def test_an_unchanged_ready_object_is_skipped() -> None:
    assert skip()


@pytest.mark.parametrize("change", [
    {"done": None},                                          # never reconciled here
    {"done": dataclasses.replace(DONE, conditions=(FAILED,))},  # failures are retried
    {"done": dataclasses.replace(DONE, handoff=None)},       # nothing published
    {"inputs": Inputs("uid-1", 2)},                          # a new generation
    {"inputs": Inputs("uid-2", 1)},                          # deleted and created again
    {"inputs": Inputs("uid-1", 1, missing=("b",))},          # a route's function went
    {"published": None},                                     # published ConfigMap deleted
    {"published": "sha256:edited"},                          # ... or edited
    {"published": UNSEEN},                                   # ... or never seen by the watch
    {"status_intact": False},                                # status edited
    {"recheck": True},                                       # oci tag, jwksUri
])
def test_any_change_means_a_reconcile(change: dict[str, Any]) -> None:
    assert not skip(**change)


def test_a_referenced_configmap_counts_by_resource_version() -> None:
    done = dataclasses.replace(DONE, inputs=Inputs("uid-1", 1, "41"))
    assert skip(done, Inputs("uid-1", 1, "41"))
    assert not skip(done, Inputs("uid-1", 1, "42"))
    unseen = dataclasses.replace(DONE, inputs=Inputs("uid-1", 1, UNSEEN))
    assert not skip(unseen, Inputs("uid-1", 1, UNSEEN))


def function(source: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "a", "namespace": "ns", "uid": "uid-1", "generation": 3},
            "spec": {"source": source, **spec}}


@pytest.mark.parametrize(("source", "recheck"), [
    ({"oci": {"ref": "registry.example/mod:v1"}}, True),     # a tag may move
    ({"oci": {"ref": f"registry.example/mod@{DIGEST}"}}, False),
    ({"url": {"url": "https://example.com/m.wasm", "sha256": "0" * 64}}, False),  # pinned
    ({"inline": "AGFzbQEAAAA="}, False),
    ({"configMapRef": {"name": "cm", "key": "m.wasm"}}, False),  # watched
])
def test_what_changes_without_an_event_is_resolved_again(source: dict[str, Any],
                                                          recheck: bool) -> None:
    assert must_recheck_function(function(source), check_secrets=False) is recheck


def test_checked_env_secrets_are_checked_again() -> None:
    env = [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
    body = function({"inline": "AGFzbQEAAAA="}, env=env)
    assert must_recheck_function(body, check_secrets=True)
    assert not must_recheck_function(body, check_secrets=False)


def route(auth: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"rules": [{"match": {"path": "/a"}, "function": "a"},
                                      {"match": {"path": "/b"}, "function": "b"}]}
    if auth is not None:
        spec["auth"] = auth
    return {"metadata": {"name": "r", "namespace": "ns", "uid": "uid-r", "generation": 1},
            "spec": spec}


def test_routes_with_a_jwks_uri_are_refreshed() -> None:
    assert not must_recheck_route(route())
    assert must_recheck_route(route({"jwt": {"jwksUri": "https://idp.example/jwks",
                                             "issuer": "https://idp.example",
                                             "audiences": ["api"]}}))
    assert route_missing(route(), {"a"}) == ("b",)


def test_the_watch_view_of_published_configmaps() -> None:
    state = RestState()
    state.record(KEY, INPUTS, handoff="sha256:h1", fields={}, conditions=[READY])
    assert not state.skippable(KEY, INPUTS, status_intact=True, recheck=False)  # unseen
    assert not state.published_seen(KEY, "uid-1", "sha256:h1")  # its own write
    assert state.skippable(KEY, INPUTS, status_intact=True, recheck=False)
    assert not state.stale(KEY)
    assert state.published_seen(KEY, "uid-1", None)  # deleted by someone: repair
    assert state.stale(KEY)
    assert not state.skippable(KEY, INPUTS, status_intact=True, recheck=False)
    assert state.published_seen(KEY, "uid-1", "sha256:edited")
    # An object not reconciled yet is left to the reconcile under way.
    assert not state.published_seen(("EdgeRoute", "ns", "r"), "uid-r", "sha256:x")
    state.keep_only("EdgeFunction", "ns", set())
    assert KEY not in state.done and "uid-1" not in state.published


def test_referenced_configmaps_seen_by_the_watch() -> None:
    state = RestState()
    body = function({"configMapRef": {"name": "cm", "key": "m.wasm"}})
    assert state.inputs(body).referenced == UNSEEN
    state.configmap_seen("ns", "cm", "7")
    assert state.inputs(body) == Inputs("uid-1", 3, "7")
    state.configmap_seen("ns", "cm", None)
    assert state.inputs(body).referenced == UNSEEN
    assert state.inputs(function({"inline": "AGFzbQEAAAA="})).referenced is None


def test_a_reconcile_recorded_after_a_list_is_newer_than_it() -> None:
    state = RestState()
    state.record(KEY, INPUTS, handoff="sha256:h1", fields={}, conditions=[READY])
    listed = state.records
    assert not state.recorded_after(KEY, listed)  # reconciled before the list
    other = ("EdgeFunction", "ns", "b")
    state.record(other, INPUTS, handoff="sha256:h2", fields={}, conditions=[READY])
    assert state.recorded_after(other, listed) and not state.recorded_after(KEY, listed)
    assert not state.recorded_after(("EdgeFunction", "ns", "never"), listed)
