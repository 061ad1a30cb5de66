"""The operator's pure status decisions, in process: conditions in the Kubernetes shape
(edge_operator.conditions) and what each status writer applies (edge_operator.status)."""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from edge_operator.conditions import Want, find, merge, now, owned, unchanged
from edge_operator.status import (
    CONFLICT_MANAGER,
    FIELD_MANAGER,
    ROLLOUT_MANAGER,
    conflict_status,
    function_status,
    rollout_status,
    route_status,
    status_body,
)

T0, T1 = "2026-01-01T00:00:00Z", "2026-02-02T00:00:00Z"
READY = Want("Ready", True, "Published", "published as configmap/edgefn-a")
VALID = Want("ModuleValid", True, "Valid", "edge module, 10 bytes")


def test_want_status_text() -> None:
    assert Want("X", True, "R").status_text == "True"
    assert Want("X", False, "R").status_text == "False"
    assert Want("X", None, "R").status_text == "Unknown"


def test_owned_builds_the_kubernetes_shape_sorted_by_type() -> None:
    conditions = owned(None, [READY, VALID], 3, timestamp=T0)
    assert [c["type"] for c in conditions] == ["ModuleValid", "Ready"]
    assert conditions[1] == {"type": "Ready", "status": "True", "reason": "Published",
                             "message": "published as configmap/edgefn-a",
                             "lastTransitionTime": T0, "observedGeneration": 3}
    assert "observedGeneration" not in owned(None, [READY], None, timestamp=T0)[0]


def test_owned_keeps_the_transition_time_while_the_status_holds() -> None:
    current = owned(None, [READY], 1, timestamp=T0)
    again = owned(current, [Want("Ready", True, "Published", "other message")], 2, timestamp=T1)
    assert again[0]["lastTransitionTime"] == T0
    assert again[0]["message"] == "other message"
    flipped = owned(current, [Want("Ready", False, "CompileError", "bad")], 2, timestamp=T1)
    assert flipped[0]["lastTransitionTime"] == T1


def test_owned_truncates_long_messages() -> None:
    assert len(owned(None, [Want("Ready", False, "X", "m" * 5000)], 1)[0]["message"]) == 1024


def test_merge_keeps_conditions_it_was_not_given() -> None:
    current = owned(None, [Want("Propagated", True, "AllRunnersServing", "")], 1, timestamp=T0)
    merged = merge(current, [READY], 1, timestamp=T1)
    assert [c["type"] for c in merged] == ["Propagated", "Ready"]
    assert find(merged, "Propagated") == current[0]
    assert find(merged, "Nope") is None


def test_merge_updates_what_it_is_given_and_keeps_the_rest_sorted() -> None:
    current: list[dict[str, Any]] = [
        {"type": "Zeta", "status": "True", "reason": "Z", "message": "",
         "lastTransitionTime": T0},
        {"type": "Ready", "status": "True", "reason": "Published", "message": "old",
         "lastTransitionTime": T0, "observedGeneration": 1},
        {"type": "Alpha", "status": "False", "reason": "A", "message": "",
         "lastTransitionTime": T0},
        {"status": "True"},  # no type: dropped
    ]
    merged = merge(current, [Want("Ready", True, "Published", "new"),
                             Want("Beta", False, "B", "")], 2, timestamp=T1)
    assert [c["type"] for c in merged] == ["Alpha", "Beta", "Ready", "Zeta"]
    assert merged[0] == current[2] and merged[3] == current[0]
    # Ready held its status: its transition time stays; Beta is new: the given time.
    assert (merged[2]["message"], merged[2]["lastTransitionTime"]) == ("new", T0)
    assert merged[2]["observedGeneration"] == 2
    assert merged[1]["lastTransitionTime"] == T1


@pytest.fixture
def new_york() -> Iterator[None]:
    """A local time zone far from UTC (conditions must not depend on it)."""
    saved = time.tzname
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TZ", "America/New_York")
        time.tzset()
        yield
    time.tzset()
    assert time.tzname == saved


def test_transition_times_are_kubernetes_times_in_utc(new_york: None) -> None:
    stamp = now()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", stamp), stamp
    moment = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=datetime.UTC)
    assert abs((datetime.datetime.now(datetime.UTC) - moment).total_seconds()) < 5
    assert owned(None, [READY], 1)[0]["lastTransitionTime"] >= stamp  # the same clock


def test_unchanged_compares_only_the_given_conditions() -> None:
    current = owned(None, [READY, VALID], 1, timestamp=T0)
    assert unchanged(current, owned(current, [READY], 1, timestamp=T1))
    assert not unchanged(current, owned(current, [READY], 2, timestamp=T1))
    assert not unchanged(None, owned(None, [READY], 1))


def _status(**fields: Any) -> dict[str, Any]:
    return {"observedGeneration": 1, "conditions": owned(None, [READY, VALID], 1, timestamp=T0),
            **fields}


def test_function_status_is_none_when_nothing_changes() -> None:
    current = _status(digest="sha256:aa", shortDigest="aa", size=10, artifact="configmap/x")
    fields = {"digest": "sha256:aa", "shortDigest": "aa", "size": 10, "artifact": "configmap/x"}
    assert function_status(current, fields, [READY, VALID], 1) is None


def test_function_status_sends_all_it_owns_and_only_that() -> None:
    current = _status(digest="sha256:aa", shortDigest="aa", size=10, artifact="configmap/x",
                      readyRunners=2, totalRunners=2, runners="2/2",
                      conditions=owned(None, [READY, VALID,
                                              Want("Propagated", True, "AllRunnersServing")],
                                       1, timestamp=T0))
    failing = [Want("Ready", False, "CompileError", "bad"),
               Want("ModuleValid", False, "CompileError", "bad")]
    status = function_status(current, {}, failing, 2)
    assert status is not None
    # The last good digest and artifact stay (omitting them would delete them) ...
    assert {k: status[k] for k in ("digest", "shortDigest", "size", "artifact")} == {
        "digest": "sha256:aa", "shortDigest": "aa", "size": 10, "artifact": "configmap/x"}
    assert status["observedGeneration"] == 2
    # ... and the tracker's fields and condition are not this writer's to send.
    assert not {"readyRunners", "totalRunners", "runners"} & set(status)
    assert [c["type"] for c in status["conditions"]] == ["ModuleValid", "Ready"]


def test_function_status_takes_new_fields() -> None:
    status = function_status(None, {"digest": "sha256:bb", "size": 3}, [READY, VALID], 1)
    assert status is not None and status["digest"] == "sha256:bb" and status["size"] == 3


def test_each_writer_refuses_fields_and_conditions_it_does_not_own() -> None:
    with pytest.raises(ValueError, match="not fields of the function reconcile"):
        function_status(None, {"readyRunners": 1}, [READY, VALID], 1)
    with pytest.raises(ValueError, match="owns exactly"):
        function_status(None, {}, [READY], 1)
    with pytest.raises(ValueError, match="owns exactly"):
        route_status(None, Want("Conflict", False, "NoConflict"), 1)
    with pytest.raises(ValueError, match="exactly"):
        rollout_status(None, {"readyRunners": 1}, Want("Propagated", True, "X"), 1)


def test_rollout_status() -> None:
    fields = {"readyRunners": 1, "totalRunners": 2, "runners": "1/2"}
    propagated = Want("Propagated", False, "Rolling", "1/2 runners")
    status = rollout_status(_status(), fields, propagated, 1)
    assert status is not None
    assert set(status) == {"readyRunners", "totalRunners", "runners", "conditions"}
    assert [c["type"] for c in status["conditions"]] == ["Propagated"]
    current = {**_status(), **fields,
               "conditions": merge(_status()["conditions"], [propagated], 1)}
    assert rollout_status(current, fields, propagated, 1) is None


def test_route_and_conflict_status_are_separate_writers() -> None:
    ready = route_status(None, READY, 4)
    assert ready is not None and ready["observedGeneration"] == 4
    assert [c["type"] for c in ready["conditions"]] == ["Ready"]
    conflict = conflict_status(None, Want("Conflict", False, "NoConflict"), 4)
    assert conflict is not None and set(conflict) == {"conditions"}
    assert [c["type"] for c in conflict["conditions"]] == ["Conflict"]
    both = {"observedGeneration": 4,
            "conditions": ready["conditions"] + conflict["conditions"]}
    assert route_status(both, READY, 4) is None
    assert conflict_status(both, Want("Conflict", False, "NoConflict"), 4) is None


def test_status_body_and_field_managers() -> None:
    body = status_body("EdgeRoute", "r", "ns", {"observedGeneration": 1})
    assert body == {"apiVersion": "edgerunner.dev/v1alpha1", "kind": "EdgeRoute",
                    "metadata": {"name": "r", "namespace": "ns"},
                    "status": {"observedGeneration": 1}}
    assert len({FIELD_MANAGER, ROLLOUT_MANAGER, CONFLICT_MANAGER}) == 3


SUMMARY = {"paths": "/a", "functions": "f", "url": "http://h/a"}


def test_route_status_sends_its_summary_fields_and_refuses_others() -> None:
    status = route_status(None, READY, 3, SUMMARY)
    assert status is not None
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        **SUMMARY, "observedGeneration": 3}
    assert status["conditions"][0]["observedGeneration"] == 3
    assert route_status(status, READY, 3, SUMMARY) is None
    with pytest.raises(ValueError) as caught:
        route_status(None, READY, 3, {"paths": "/a", "digest": "x", "size": 1})
    assert str(caught.value) == "not fields of the route reconcile: ['digest', 'size']"


def test_a_summary_field_no_longer_sent_is_written_away() -> None:
    """Server-side apply removes what its manager stops sending: an otherwise unchanged
    status must still be applied once without the field."""
    current = {**SUMMARY, "observedGeneration": 3,
               "conditions": owned(None, [READY], 3, timestamp=T0)}
    without_url = {"paths": "/a", "functions": "f"}
    status = route_status(current, READY, 3, without_url)
    assert status is not None
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        **without_url, "observedGeneration": 3}
    assert status["conditions"] == current["conditions"]  # the same transition time
    assert route_status({**current, "url": None}, READY, 3, without_url) is None


def test_conflict_conditions_carry_the_generation() -> None:
    status = conflict_status(None, Want("Conflict", True, "RulesConflict", "x"), 6)
    assert status is not None
    assert status["conditions"][0]["observedGeneration"] == 6
