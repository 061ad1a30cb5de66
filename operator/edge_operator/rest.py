"""What the resync may skip: an object whose inputs did not change since its last reconcile.

Used by :class:`edge_operator.reconcile.Reconciler`.  Every reconcile of an
EdgeFunction or EdgeRoute leaves a :class:`Done` record (per kind, namespace
and name): the :class:`Inputs` it started from (uid, generation, the
resourceVersion of the ConfigMap a ``configMapRef`` names, the functions a
route names that were missing), the hand-off digest of the ConfigMap it
published and the status fields and conditions it wanted.  The resync
(every ``--resync-interval``) reconciles an object again only if
:func:`unchanged` says no, so 1,000 quiet functions cost a list, not 4,000
API requests a minute.  Not skipped, ever:

* an object whose last reconcile did not end ``Ready`` (failures keep being
  retried);
* what changes without any event (:func:`must_recheck_function`,
  :func:`must_recheck_route`): an ``oci`` source by tag (a moved tag rolls
  out; the blob is not downloaded again when its digest is validated), env
  Secrets checked with ``--check-secrets``, routes with a ``jwksUri`` (keys
  refreshed).  A ``url`` source is pinned by its sha256: once validated and
  published it cannot change;
* an object whose status no longer shows what its writer applied (the
  caller checks it with the status builders of :mod:`edge_operator.status`);
* an object whose published ConfigMap or referenced ConfigMap was not seen by
  the watch (:class:`RestState` is fed by the ConfigMap event handlers of
  :mod:`edge_operator.handlers`), or was seen different from what the record
  says: a published ConfigMap deleted or edited by someone is also repaired at
  once by the event handler (:meth:`RestState.published_seen`).

Skipped whatever the list says: an object reconciled after the resync listed
it (:meth:`RestState.recorded_after`), since that reconcile read it afresh and
the list is older.  A resync that starts during a bulk apply of 1,000 objects
would otherwise go through its list, one object at a time, reconciling again
what kopf's handlers reconciled since it listed, for minutes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import ValidationError

from edge_api.models import EdgeFunctionSpec, EdgeRouteSpec
from edge_api.oci import OciError, parse_reference
from edge_operator.conditions import Want

#: A ConfigMap the watch has not reported (yet): never counts as unchanged.
UNSEEN: Final = "<unseen>"

Key = tuple[str, str, str]  # (kind, namespace, name)


@dataclass(frozen=True)
class Inputs:
    """What a reconcile's result depends on, as known without asking the API server."""

    uid: str
    generation: int | None
    #: resourceVersion of the ConfigMap ``spec.source.configMapRef`` names (None: no
    #: reference; :data:`UNSEEN`: not reported by the watch).
    referenced: str | None = None
    #: Functions a route names that do not exist.
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class Done:
    """The last reconcile of one object: what it started from and what it wrote."""

    inputs: Inputs
    #: Hand-off digest of the ConfigMap it published (None: it published none).
    handoff: str | None
    fields: Mapping[str, Any]
    conditions: tuple[Want, ...]
    #: :attr:`RestState.records` when it was made (orders it against a resync's list).
    number: int = 0

    @property
    def ready(self) -> bool:
        return any(w.type == "Ready" and w.status is True for w in self.conditions)


def unchanged(done: Done | None, inputs: Inputs, *, published: str | None,
              status_intact: bool, recheck: bool) -> bool:
    """True if the resync may skip the object (pure).

    ``published``: hand-off digest of the published ConfigMap as the watch last
    saw it (None: deleted; :data:`UNSEEN`: never seen); ``status_intact``: the
    object's status still shows what :attr:`Done.fields` and
    :attr:`Done.conditions` say; ``recheck``: the object has inputs that change
    without an event (:func:`must_recheck_function`, :func:`must_recheck_route`).
    """
    return (done is not None and done.ready and not recheck and status_intact
            and done.inputs == inputs and inputs.referenced != UNSEEN
            and done.handoff is not None and published == done.handoff)


def must_recheck_function(body: Mapping[str, Any], *, check_secrets: bool) -> bool:
    """True for an EdgeFunction whose inputs change without any event: an ``oci`` source
    by tag, or env Secrets the operator checks."""
    try:
        spec = EdgeFunctionSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return False  # never Ready: never skipped anyway
    if check_secrets and any(item.value_from is not None for item in spec.env):
        return True
    if spec.source.oci is None:
        return False
    try:
        return parse_reference(spec.source.oci.ref).digest is None
    except OciError:
        return False


def must_recheck_route(body: Mapping[str, Any]) -> bool:
    """True for an EdgeRoute whose JWKS documents are refreshed by every resync."""
    try:
        return bool(EdgeRouteSpec.model_validate(body.get("spec") or {}).jwks_uris())
    except ValidationError:
        return False


def route_missing(body: Mapping[str, Any], existing: set[str]) -> tuple[str, ...]:
    """The functions ``body`` (an EdgeRoute) names that are not in ``existing``."""
    try:
        names = EdgeRouteSpec.model_validate(body.get("spec") or {}).function_names()
    except ValidationError:
        return ()
    return tuple(name for name in names if name not in existing)


def configmap_reference(body: Mapping[str, Any]) -> str | None:
    """The ConfigMap an EdgeFunction's ``spec.source.configMapRef`` names, if any."""
    source = (body.get("spec") or {}).get("source") or {}
    ref = source.get("configMapRef") if isinstance(source, dict) else None
    name = ref.get("name") if isinstance(ref, dict) else None
    return name if isinstance(name, str) and name else None


@dataclass
class RestState:
    """The :class:`Done` records and what the ConfigMap watch saw, for one operator."""

    done: dict[Key, Done] = field(default_factory=dict)
    #: Hand-off digest of each published ConfigMap by its owner's uid (None: deleted).
    published: dict[str, str | None] = field(default_factory=dict)
    #: resourceVersion of each ConfigMap not written by the operator.
    configmaps: dict[tuple[str, str], str | None] = field(default_factory=dict)
    #: How many reconciles were recorded so far.
    records: int = 0

    def inputs(self, body: Mapping[str, Any], missing: tuple[str, ...] = ()) -> Inputs:
        """The inputs of ``body`` (an EdgeFunction or EdgeRoute) as known now."""
        metadata = body["metadata"]
        name = configmap_reference(body)
        referenced = None if name is None else \
            self.configmaps.get((metadata["namespace"], name), UNSEEN)
        return Inputs(str(metadata.get("uid") or ""), metadata.get("generation"),
                      referenced, missing)

    def record(self, key: Key, inputs: Inputs, *, handoff: str | None,
               fields: Mapping[str, Any], conditions: list[Want]) -> None:
        self.records += 1
        self.done[key] = Done(inputs, handoff, dict(fields), tuple(conditions), self.records)

    def recorded_after(self, key: Key, number: int) -> bool:
        """True if the object's last reconcile finished after :attr:`records` was
        ``number``: it started from a newer state than a list taken then."""
        done = self.done.get(key)
        return done is not None and done.number > number

    def forget(self, key: Key) -> None:
        done = self.done.pop(key, None)
        if done is not None:
            self.published.pop(done.inputs.uid, None)

    def keep_only(self, kind: str, namespace: str, names: set[str]) -> None:
        """Drop the records of objects of ``kind`` in ``namespace`` that are gone."""
        for key in [k for k in self.done if k[:2] == (kind, namespace) and k[2] not in names]:
            self.forget(key)

    def skippable(self, key: Key, inputs: Inputs, *, status_intact: bool,
                  recheck: bool) -> bool:
        """:func:`unchanged` for the object ``key`` with the watch's view of its ConfigMap."""
        published = self.published.get(inputs.uid, UNSEEN)
        return unchanged(self.done.get(key), inputs, published=published,
                         status_intact=status_intact, recheck=recheck)

    def stale(self, key: Key) -> bool:
        """True if the watch saw the object's published ConfigMap differ from its record."""
        done = self.done.get(key)
        if done is None:
            return True
        return self.published.get(done.inputs.uid, UNSEEN) != done.handoff

    def published_seen(self, key: Key, uid: str, handoff: str | None) -> bool:
        """The watch saw the ConfigMap published for ``key`` (``handoff`` None: deleted).

        True if it is not what the last reconcile published: it must be repaired.  An
        object with no record yet is being reconciled (or will be): nothing to do.
        """
        done = self.done.get(key)
        if handoff is None and done is None:
            self.published.pop(uid, None)
        else:
            self.published[uid] = handoff
        return done is not None and done.inputs.uid == uid and done.handoff != handoff

    def configmap_seen(self, namespace: str, name: str, version: str | None) -> None:
        """The watch saw a ConfigMap the operator does not write (None: deleted)."""
        if version is None:
            self.configmaps.pop((namespace, name), None)
        else:
            self.configmaps[(namespace, name)] = version
