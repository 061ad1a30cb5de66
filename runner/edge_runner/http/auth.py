"""Route authentication and authorization (docs/http.md, "Protected routes").

Built once per catalog snapshot by :class:`AuthTable` from the route specs and
the Secrets their ``auth`` names (API keys, JWKS) or the JWKS documents the
operator fetched for a ``jwksUri``; asked once per request by
:mod:`edge_runner.http.dataplane` right after routing and before the body is
read, so no guest code runs for a refused request.  A rule's ``auth`` replaces
the route's; ``anonymous: true`` opens a rule.  With both ``apiKey`` and
``jwt`` either admits.  Answers: 401 with ``WWW-Authenticate`` (RFC 6750 for
bearer tokens), 403 when ``require.claims`` fails.  On success the verified
identity travels to the guest as ``x-edge-auth-*`` headers; the credential
itself only with ``forwardCredentials: true``.  Key values are compared in
constant time and never logged.  Token checks live in
:mod:`edge_runner.http.jwtcheck`.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from edge_api.models import EdgeRouteSpec, RouteAuth
from edge_runner.http.jwtcheck import (
    JwksError,
    JwtVerifier,
    TokenRejected,
    claim_contains,
    load_jwks,
)

log = logging.getLogger("edge_runner.http.auth")

#: Secrets as sources deliver them: name -> data key -> bytes.
Secrets = Mapping[str, Mapping[str, bytes]]
Headers = list[tuple[bytes, bytes]]

AUTH_PREFIX = b"x-edge-auth-"
DEFAULT_KEY_HEADER = "x-api-key"
MAX_IDENTITY_VALUE = 512
_UNSAFE = re.compile(r"[^\x20-\x7e]")


@dataclass(frozen=True, slots=True)
class Allowed:
    #: Identity headers for the guest (``x-edge-auth-*``).
    identity: Headers
    #: Header names to remove before the guest sees the request (credentials).
    strip: frozenset[bytes]
    #: The query string to pass on (the API key parameter removed), or None: unchanged.
    query: bytes | None = None


#: The decision for a rule without auth: nothing added, nothing removed.
OPEN = Allowed([], frozenset())


@dataclass(frozen=True, slots=True)
class Denied:
    status: int
    slug: str
    title: str
    detail: str
    headers: Headers


def _header_value(value: Any) -> bytes:
    text = " ".join(str(v) for v in value) if isinstance(value, list) else str(value)
    return _UNSAFE.sub("?", text)[:MAX_IDENTITY_VALUE].encode()


class RoutePolicy:
    """The compiled ``auth`` of one rule."""

    def __init__(self, route: str, auth: RouteAuth, secrets: Secrets,
                 jwks: Mapping[str, bytes] | None = None) -> None:
        jwks = jwks or {}
        self.route = route
        self.forward = auth.forward_credentials
        self.require = dict(auth.require.claims) if auth.require is not None else {}
        self.key_header: bytes | None = None
        self.key_query: bytes | None = None
        self.keys: tuple[tuple[str, bytes], ...] = ()
        challenges: list[bytes] = []
        if auth.api_key is not None:
            if auth.api_key.query is not None:
                self.key_query = auth.api_key.query.encode()
                challenges.append(b'ApiKey query="' + self.key_query + b'"')
            else:
                self.key_header = (auth.api_key.header or DEFAULT_KEY_HEADER).lower().encode()
                challenges.append(b'ApiKey header="' + self.key_header + b'"')
            data = secrets.get(auth.api_key.secret_ref.name, {})
            self.keys = tuple((name, value.strip()) for name, value in sorted(data.items())
                              if value.strip())
        self.jwt: JwtVerifier | None = None
        self.claims_to_headers: tuple[tuple[str, bytes], ...] = ()
        if auth.jwt is not None:
            ref = auth.jwt.jwks_secret_ref
            if ref is not None:
                document, where = secrets.get(ref.name, {}).get(ref.key), \
                    f"Secret {ref.name} key {ref.key}"
            else:
                document, where = jwks.get(auth.jwt.jwks_uri or ""), f"{auth.jwt.jwks_uri}"
            keys = None
            if document is not None:
                try:
                    keys = load_jwks(document)
                except JwksError as exc:
                    log.warning("EdgeRoute %s: JWKS of %s: %s", route, where, exc,
                                extra={"route": route})
            self.jwt = JwtVerifier(keys=keys, issuer=auth.jwt.issuer,
                                   audiences=auth.jwt.audiences, algorithms=auth.jwt.algorithms)
            self.claims_to_headers = tuple(
                (item.claim, item.header.encode()) for item in auth.jwt.claims_to_headers)
            challenges.append(f'Bearer realm="{route}"'.encode())
        self.challenges = tuple(challenges)

    def _unauthenticated(self, detail: str, bearer_error: str | None) -> Denied:
        suffix = f', error="{bearer_error}"'.encode() if bearer_error is not None else b""
        headers = [(b"www-authenticate", c + suffix if c.startswith(b"Bearer ") else c)
                   for c in self.challenges]
        return Denied(401, "unauthenticated", "Unauthenticated", detail, headers)

    def _strip(self) -> frozenset[bytes]:
        if self.forward:
            return frozenset()
        names = {b"authorization"} if self.jwt is not None else set()
        if self.key_header is not None:
            names.add(self.key_header)
        return frozenset(names)

    def decide(self, headers: Sequence[tuple[bytes, bytes]], query: bytes,
               now: float) -> Allowed | Denied:
        given_key: bytes | None = None
        bearer: bytes | None = None
        for name, value in headers:
            if name == self.key_header:
                given_key = value
            elif name == b"authorization" and value[:7].lower() == b"bearer ":
                bearer = value[7:].strip()
        new_query: bytes | None = None
        if self.key_query is not None and query:
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            wanted = self.key_query.decode()
            for param, text in pairs:
                if param == wanted:
                    given_key = text.encode("latin-1")
            if not self.forward:
                new_query = urlencode([(p, t) for p, t in pairs if p != wanted]).encode()
        if given_key is not None:
            matched = self._match_key(given_key)
            if matched is not None:
                return Allowed([(b"x-edge-auth-method", b"api-key"),
                                (b"x-edge-auth-key", _header_value(matched))],
                               self._strip(), new_query)
            if bearer is None:
                return self._unauthenticated("the API key is not valid", None)
        if bearer is not None and self.jwt is not None:
            return self._bearer(bearer, now, new_query)
        return self._unauthenticated("this route needs credentials", None)

    def _match_key(self, given: bytes) -> str | None:
        """The Secret data key whose value is ``given``; every key is compared (constant time)."""
        found = None
        for name, value in self.keys:
            if hmac.compare_digest(value, given):
                found = name
        return found

    def _bearer(self, token: bytes, now: float, new_query: bytes | None) -> Allowed | Denied:
        assert self.jwt is not None
        try:
            claims = self.jwt.verify(token.decode("latin-1"), now)
        except TokenRejected as exc:
            return self._unauthenticated(f"bearer token refused: {exc}", "invalid_token")
        for claim, wanted in self.require.items():
            if not claim_contains(claims, claim, wanted):
                return Denied(403, "forbidden", "Forbidden",
                              f"the token's {claim} claim lacks {' '.join(wanted)}",
                              [(b"www-authenticate",
                                f'Bearer realm="{self.route}", error="insufficient_scope"'
                                .encode())])
        identity = [(b"x-edge-auth-method", b"jwt")]
        if "sub" in claims:
            identity.append((b"x-edge-auth-subject", _header_value(claims["sub"])))
        for claim, header in self.claims_to_headers:
            if claim in claims and header != b"x-edge-auth-subject":
                identity.append((header, _header_value(claims[claim])))
        return Allowed(identity, self._strip(), new_query)


class AuthTable:
    """Every rule's policy, by (route name, rule index); None: the rule is open."""

    def __init__(self, routes: Sequence[tuple[str, EdgeRouteSpec]], secrets: Secrets,
                 jwks: Mapping[str, bytes]) -> None:
        self._policies: dict[tuple[str, int], RoutePolicy] = {}
        for name, spec in routes:
            for index in range(len(spec.rules)):
                auth = spec.auth_of(index)
                if auth is not None:
                    self._policies[(name, index)] = RoutePolicy(name, auth, secrets, jwks)

    def __bool__(self) -> bool:
        return bool(self._policies)

    def policy(self, route: str, index: int) -> RoutePolicy | None:
        return self._policies.get((route, index))
