"""Real signing keys, JWKS documents and tokens for the route-auth tests.

Tokens are minted with PyJWT, a different JOSE library than the runner's
(joserfc), so a test passes only if both read the standards alike.  The
hostile tokens (``alg: none``, HS256 keyed with the public key, a flipped
signature byte) are built by hand where PyJWT refuses to make them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISSUER = "https://id.example.test"
AUDIENCE = "hello"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Issuer:
    """An RSA and an EC key pair, as an OIDC provider would hold them."""

    rsa_key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048))
    ec_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    def jwks(self) -> bytes:
        rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.rsa_key.public_key()))
        ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(self.ec_key.public_key()))
        return json.dumps({"keys": [{**rsa_jwk, "kid": "rsa-1"}, {**ec_jwk, "kid": "ec-1"}]}
                          ).encode()

    def claims(self, **changes: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice",
                                  "iat": now, "exp": now + 600, "scope": "read write"}
        claims.update(changes)
        return {k: v for k, v in claims.items() if v is not None}

    def token(self, alg: str = "RS256", kid: str | None = None, **changes: Any) -> str:
        key: Any = self.rsa_key if alg.startswith("RS") else self.ec_key
        kid = kid or ("rsa-1" if alg.startswith("RS") else "ec-1")
        return jwt.encode(self.claims(**changes), key, algorithm=alg, headers={"kid": kid})

    def unsigned_token(self) -> str:
        header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        return f"{header}.{_b64(json.dumps(self.claims()).encode())}."

    def hs256_with_public_key(self) -> str:
        """HS256 keyed with the RSA public key's PEM: the algorithm-confusion attack."""
        pem = self.rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"}).encode())
        signing_input = f"{header}.{_b64(json.dumps(self.claims()).encode())}"
        mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{_b64(mac)}"


def flip_signature_byte(token: str) -> str:
    head, signature = token.rsplit(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{_b64(bytes(raw))}"
