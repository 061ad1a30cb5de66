"""Route and rollout decisions of the operator, in process: conflicts across a
namespace's routes (edge_operator.routes) and runner counts per function
(edge_operator.propagation, over edge_api.runners)."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

from lightkube import KubeConfig
from lightkube.config.models import Cluster, User

from edge_api.k8s import async_client
from edge_api.runners import RunnerRecord, lease, lease_name, parse_lease
from edge_operator.conditions import Want, owned
from edge_operator.metrics import OperatorMetrics
from edge_operator.propagation import (
    PropagationTracker,
    after_apply,
    aggregate,
    published_digest,
)
from edge_operator.routes import NO_CONFLICT, conflict_conditions, reconcile_route
from edge_operator.status import rollout_status

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
DIGEST = "sha256:" + "ab" * 32


def route(name: str, path: str, **extra: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"match": {"path": path, **extra}, "function": "f"}
    return {"metadata": {"name": name}, "spec": {"rules": [rule]}}


def test_no_conflicts() -> None:
    wanted = conflict_conditions([route("a", "/a"), route("b", "/b")])
    assert wanted == {"a": NO_CONFLICT, "b": NO_CONFLICT}


def test_a_conflict_is_reported_on_both_routes() -> None:
    wanted = conflict_conditions([route("b", "/same"), route("a", "/same"), route("c", "/c")])
    assert wanted["c"] == NO_CONFLICT
    for name in ("a", "b"):
        assert (wanted[name].status, wanted[name].reason) == (True, "RulesConflict")
        assert wanted[name].message == "b/0 conflicts with a/0 on any host /same; a/0 wins"


def test_the_older_route_wins_a_conflict_whatever_its_name() -> None:
    older = route("z-old", "/same")
    older["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    newer = route("a-new", "/same")
    newer["metadata"]["creationTimestamp"] = "2026-01-01T00:00:01Z"
    wanted = conflict_conditions([newer, older])
    for name in ("z-old", "a-new"):
        assert wanted[name].message == (
            "a-new/0 conflicts with z-old/0 on any host /same; z-old/0 wins")


def test_disjoint_methods_do_not_conflict() -> None:
    wanted = conflict_conditions([route("a", "/m", methods=["GET"]),
                                  route("b", "/m", methods=["POST"])])
    assert not wanted["a"].status and not wanted["b"].status


def test_a_route_the_models_refuse_has_no_entry() -> None:
    broken = {"metadata": {"name": "bad"}, "spec": {"rules": []}}
    assert set(conflict_conditions([broken, route("a", "/a")])) == {"a"}


def test_an_invalid_route_is_not_ready_before_any_api_call() -> None:
    config = KubeConfig.from_one(cluster=Cluster(server="http://127.0.0.1:9"), user=User()).get()
    assert config is not None

    async def run() -> Any:
        client = async_client(config, field_manager="test")
        try:
            return await reconcile_route(
                {"metadata": {"name": "r", "namespace": "ns", "uid": "u"},
                 "spec": {"rules": [{"match": {"path": "/x"}}]}},
                kube=client, metrics=OperatorMetrics())
        finally:
            await client.close()

    ready = asyncio.run(run())
    assert (ready.type, ready.status, ready.reason) == ("Ready", False, "InvalidSpec")
    assert ready.message == "rules.0: exactly one of function, backends must be set"


def runner(name: str, digest: str | None, renewed: datetime.datetime = NOW) -> RunnerRecord:
    return RunnerRecord(name=lease_name(name), runner_id=name, renewed=renewed, duration=15,
                        digests={"fn": digest} if digest else {})


def test_rollout_aggregate() -> None:
    assert aggregate("fn", None, [runner("a", DIGEST)]).condition.reason == "NotPublished"
    none = aggregate("fn", DIGEST, [])
    assert (none.ready, none.total, none.condition.reason) == (0, 0, "NoRunners")
    done = aggregate("fn", DIGEST, [runner("a", DIGEST), runner("b", DIGEST)])
    assert (done.ready, done.total, done.condition.status) == (2, 2, True)
    assert done.fields() == {"readyRunners": 2, "totalRunners": 2, "runners": "2/2"}
    rolling = aggregate("fn", DIGEST, [runner("a", DIGEST), runner("b", "sha256:old"),
                                       runner("c", None)])
    assert (rolling.ready, rolling.total, rolling.condition.reason) == (1, 3, "Rolling")
    assert rolling.condition.message.endswith("waiting for b, c")


def test_only_a_ready_function_has_a_digest_to_roll_out() -> None:
    ready = owned(None, [Want("Ready", True, "Published")], 1)
    assert published_digest({"digest": DIGEST, "conditions": ready}) == DIGEST
    failing = owned(None, [Want("Ready", False, "CompileError")], 1)
    assert published_digest({"digest": DIGEST, "conditions": failing}) is None
    assert published_digest({}) is None


def test_lease_round_trip_keeps_the_acquire_time() -> None:
    acquired = NOW - datetime.timedelta(minutes=5)
    body = lease(runner_id="Pod_A", namespace="ns", duration=15, digests={"fn": DIGEST},
                 now=NOW, acquired=acquired)
    assert body["metadata"]["name"] == "edge-runner-pod-a"
    assert body["spec"]["acquireTime"] == "2025-12-31T23:55:00.000000Z"
    record = parse_lease(body)
    assert record is not None
    assert (record.runner_id, record.renewed, record.digests) == ("Pod_A", NOW, {"fn": DIGEST})
    assert record.alive(NOW + datetime.timedelta(seconds=14))
    assert not record.alive(NOW + datetime.timedelta(seconds=15))
    assert parse_lease({"metadata": {}}) is None


def test_after_apply_is_what_the_next_rollout_pass_compares_against() -> None:
    """The tracker's own view after a write: a second pass before the watch reports the
    write wants nothing more, and the reconcile's conditions are kept."""
    ready = {"type": "Ready", "status": "True", "reason": "Published", "message": ""}
    current = {"digest": DIGEST, "observedGeneration": 1, "conditions": [ready]}
    rollout = aggregate("fn", published_digest(current), [runner("a", DIGEST)])
    wanted = rollout_status(current, rollout.fields(), rollout.condition, 1)
    assert wanted is not None
    seen = after_apply(current, wanted)
    assert [c["type"] for c in seen["conditions"]] == ["Propagated", "Ready"]
    assert seen["runners"] == "1/1" and seen["digest"] == DIGEST
    assert rollout_status(seen, rollout.fields(), rollout.condition, 1) is None


def test_the_tracker_recounts_a_function_only_when_its_status_or_generation_changed() -> None:
    config = KubeConfig.from_one(cluster=Cluster(server="http://127.0.0.1:9"), user=User()).get()
    assert config is not None

    async def run() -> None:
        client = async_client(config, field_manager="test")
        try:
            tracker = PropagationTracker(kube=client, namespaces=["ns"],
                                         metrics=OperatorMetrics())
            body: dict[str, Any] = {"metadata": {"name": "fn", "namespace": "ns",
                                                 "generation": 1}, "status": {}}
            state = tracker._state["ns"]
            tracker.function_event("ADDED", body)
            assert state.dirty == {"fn"} and tracker.wake.is_set()
            state.dirty.clear()
            tracker.wake.clear()
            annotated = {**body, "metadata": {**body["metadata"], "annotations": {"a": "b"}}}
            tracker.function_event("MODIFIED", annotated)  # kopf's annotations: nothing
            assert state.dirty == set() and not tracker.wake.is_set()
            tracker.function_event("MODIFIED", {**body, "status": {"digest": DIGEST}})
            assert state.dirty == {"fn"}
            tracker.function_event("ADDED", {**body, "metadata": {**body["metadata"],
                                                                  "namespace": "other"}})
            assert "other" not in tracker._state  # not a namespace it tracks
            tracker.function_event("DELETED", body)
            assert "fn" not in state.functions and "fn" in state.dirty
        finally:
            await client.close()

    asyncio.run(run())
