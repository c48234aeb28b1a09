"""Signed tokens of the notebook proxy: presigned URLs (valid 5 minutes) and the browser sessions they open.

A token is ``<base64url JSON claims>.<base64url HMAC-SHA256>`` under a secret
kept in the data dir (mode 0600). The claims name the kind of token ("url" or
"session", so one can never pass for the other), the instance and its creation
stamp (a deleted and re-created instance of the same name does not accept the
old tokens), an expiry, and for a URL the session length it grants.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from sagestack.identity import write_private

URL_SECONDS = 300
COOKIE_NAME = "sagestack-notebook"


@dataclass(frozen=True)
class Claims:
    kind: str
    name: str
    stamp: int
    expires: int
    session_seconds: int = 0


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    def __init__(self, key_file: Path) -> None:
        self._key = self._load_or_create(key_file)

    @staticmethod
    def _load_or_create(path: Path) -> bytes:
        if path.exists():
            os.chmod(path, 0o600)  # in case a restore or a copy loosened it
            return bytes.fromhex(path.read_text().strip())
        key = secrets.token_bytes(32)
        write_private(path, key.hex())
        return key

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, claims: Claims) -> str:
        body = {"k": claims.kind, "n": claims.name, "c": claims.stamp, "x": claims.expires,
                "d": claims.session_seconds, "r": secrets.token_hex(8)}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: str, kind: str, now: float | None = None) -> Claims | None:
        """The claims of a genuine, unexpired token of ``kind``; None for anything else."""
        payload, _, signature = token.partition(".")
        if not payload or not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            body = json.loads(_unb64(payload))
            claims = Claims(str(body["k"]), str(body["n"]), int(body["c"]), int(body["x"]), int(body["d"]))
        except (ValueError, KeyError, TypeError, binascii.Error):
            return None
        if claims.kind != kind or claims.expires <= (time.time() if now is None else now):
            return None
        return claims

    def presign(self, name: str, stamp: int, session_seconds: int) -> str:
        return self.issue(Claims("url", name, stamp, int(time.time()) + URL_SECONDS, session_seconds))

    def session_for(self, url: Claims) -> str:
        return self.issue(Claims("session", url.name, url.stamp, int(time.time()) + url.session_seconds))
