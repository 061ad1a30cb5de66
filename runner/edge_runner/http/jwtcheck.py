"""JWT bearer tokens: verification against a JWKS and the ``require.claims`` check.

Pure code (the clock is a parameter), used by :mod:`edge_runner.http.auth`
once per request that carries a bearer token.  Signatures and claims are
checked by joserfc, never by hand: the algorithm allow-list is the route's
(asymmetric algorithms only, see ``JwtAlgorithm`` in ``edge_api.models``), so
``alg: none`` and HS256 signed with a public key are refused by the library.
``exp`` is required; ``nbf``, ``iss`` and ``aud`` are checked with
:data:`LEEWAY_SECONDS` of clock skew.

Verified tokens are cached by their full compact form (so by signature) until
they expire: the hot path of a repeated token is one dict lookup and a clock
comparison (docs/http.md has the measured cost).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

#: Seconds of clock skew allowed on ``exp`` and ``nbf``.
LEEWAY_SECONDS = 30
#: Verified tokens remembered per route rule; the cache is emptied when full.
CACHE_ENTRIES = 4096
#: Longest token read (a header beyond this is refused, not parsed).
MAX_TOKEN_BYTES = 8192


class TokenRejected(ValueError):
    """A token that does not authenticate; the message is safe to show the client."""


class JwksError(ValueError):
    """A JWKS document that cannot be used; the message names the problem."""


def load_jwks(document: bytes) -> KeySet:
    """Parse a JWKS (``{"keys": [...]}``); private and symmetric keys are refused."""
    try:
        data = json.loads(document)
        keys = data["keys"]
    except (ValueError, KeyError, TypeError) as exc:
        raise JwksError("not a JWKS document ({\"keys\": [...]})") from exc
    if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
        raise JwksError("keys must be a list of JWK objects")
    for key in keys:
        if key.get("kty") not in ("RSA", "EC", "OKP"):
            raise JwksError(f"key type {key.get('kty')!r} is not a public-key type")
        if "d" in key:
            raise JwksError("the JWKS holds a private key; publish only public keys")
    try:
        return KeySet.import_key_set({"keys": keys})
    except (JoseError, ValueError, TypeError) as exc:
        raise JwksError(f"a key cannot be imported: {exc}") from exc


@dataclass(frozen=True, slots=True)
class Verified:
    claims: Mapping[str, Any]
    #: Expiry (seconds since the epoch) after which the cached entry is stale.
    expires: float


class JwtVerifier:
    """Verifies tokens for one route rule: its keys, issuer, audiences and algorithms."""

    def __init__(self, *, keys: KeySet | None, issuer: str, audiences: Sequence[str],
                 algorithms: Sequence[str]) -> None:
        self.keys = keys
        self.algorithms = list(algorithms)
        self._at = 0
        self._registry = jwt.JWTClaimsRegistry(
            now=lambda: self._at,
            leeway=LEEWAY_SECONDS,
            iss={"essential": True, "value": issuer},
            aud={"essential": True, "values": list(audiences)},
            exp={"essential": True},
        )
        self._cache: dict[str, Verified] = {}

    def verify(self, token: str, now: float) -> Mapping[str, Any]:
        """The claims of a valid token; raises :class:`TokenRejected`."""
        cached = self._cache.get(token)
        if cached is not None:
            if now < cached.expires:
                return cached.claims
            del self._cache[token]
        if self.keys is None:
            raise TokenRejected("no signing keys are configured for this route")
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenRejected("token too long")
        try:
            decoded = jwt.decode(token, self.keys, algorithms=self.algorithms)
            self._at = int(now)
            self._registry.validate(decoded.claims)
        except (JoseError, ValueError, TypeError) as exc:
            raise TokenRejected(_describe(exc)) from exc
        claims = decoded.claims
        expires = claims.get("exp")
        if not isinstance(expires, int | float):
            raise TokenRejected("exp is not a number")
        if len(self._cache) >= CACHE_ENTRIES:
            self._cache.clear()
        self._cache[token] = Verified(claims, float(expires) + LEEWAY_SECONDS)
        return claims


def _describe(exc: Exception) -> str:
    """A short reason for the client and the log, without echoing token contents."""
    name = type(exc).__name__
    reasons = {
        "ExpiredTokenError": "the token has expired",
        "InvalidTokenError": "the token is not valid yet or not valid at all",
        "BadSignatureError": "bad signature",
        "UnsupportedAlgorithmError": "the token's algorithm is not allowed",
        "InvalidKeyIdError": "no key with the token's kid",
        "DecodeError": "the token cannot be decoded",
    }
    if name in ("MissingClaimError", "InvalidClaimError"):
        return str(getattr(exc, "description", "") or "a claim is missing or wrong")
    return reasons.get(name, f"invalid token ({name})")


def claim_contains(claims: Mapping[str, Any], claim: str, wanted: Sequence[str]) -> bool:
    """True if ``claim`` holds every wanted value (a space-separated string or a list)."""
    value = claims.get(claim)
    if isinstance(value, str):
        have = set(value.split())
    elif isinstance(value, list):
        have = {str(v) for v in value}
    elif value is None:
        return False
    else:
        have = {str(value)}
    return all(w in have for w in wanted)
