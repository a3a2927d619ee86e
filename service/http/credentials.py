"""Who is calling: the caller's credentials as the raw ASGI scope carries them.

Shared by access control (forwards them to MLflow, caches by their digest) and rate limiting
(counts per user). Nothing here verifies a password; only the MLflow tracking server does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

from starlette.types import Scope

# Digests key in-memory caches only; a per-process key keeps them useless outside the process.
_DIGEST_KEY = secrets.token_bytes(32)


def header(scope: Scope, name: bytes) -> str | None:
    """One request header, or None; repeated headers are joined as HTTP allows (cookies: ';')."""
    values = [v.decode("latin-1") for k, v in scope["headers"] if k.lower() == name]
    if not values:
        return None
    return ("; " if name == b"cookie" else ", ").join(values)


def is_insights_request(scope: Scope, prefixes: Sequence[str]) -> bool:
    """A POST to an insights endpoint (both the /api and the /ajax-api prefix)."""
    return (
        scope["type"] == "http"
        and scope["method"] == "POST"
        and any(scope["path"].startswith(p) for p in prefixes)
    )


@dataclass(frozen=True)
class Credentials:
    """What the caller sent to prove who it is: forwarded to MLflow as is."""

    authorization: str | None
    cookie: str | None

    @classmethod
    def from_scope(cls, scope: Scope) -> Credentials:
        return cls(header(scope, b"authorization"), header(scope, b"cookie"))

    def forward_headers(self) -> dict[str, str]:
        headers = {}
        if self.authorization is not None:
            headers["Authorization"] = self.authorization
        if self.cookie is not None:
            headers["Cookie"] = self.cookie
        return headers

    @cached_property
    def digest(self) -> str:
        material = f"{self.authorization}\0{self.cookie}".encode()
        return hmac.new(_DIGEST_KEY, material, hashlib.sha256).hexdigest()

    @cached_property
    def basic_username(self) -> str | None:
        """The user name of an ``Authorization: Basic`` header (unverified), else None."""
        scheme, _, token = (self.authorization or "").strip().partition(" ")
        if scheme.lower() != "basic" or not token:
            return None
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        username, sep, _password = decoded.partition(":")
        return username if sep and username else None
