"""API keys: made once, shown once, stored as a hash; looked up per request.

A key is `sk-cs-` plus 32 random bytes (urlsafe base64). Only its SHA-256 is stored: the
key has full entropy, so a slow password hash would add latency and no safety.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

from chatsmith.serve.store import Store

KEY_PREFIX = "sk-cs-"
LOCAL_USER = "local"  # who owns conversations when the server runs without keys


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


def create_key(store: Store, user: str, name: str = "", rpm: int | None = None) -> tuple[str, str]:
    """A new key for `user` (created if needed); returns (key id, the key itself)."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    k = store.add_key(user, key[: len(KEY_PREFIX) + 6], hash_key(key), name=name, rpm=rpm)
    return k.id, key


@dataclass
class Caller:
    user_id: str
    user_name: str
    key_id: str | None  # None: no key (a server that requires none)
    rpm: int | None


class AuthError(Exception):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class Authenticator:
    """Decides who a request comes from. Keys are required as soon as a key was ever made,
    revoked ones included, so revoking every key after a leak shuts the door rather than
    opening it; only require=False (`--require-keys no`) turns keys off. A server that never
    had a key just works, and takes `Bearer ` with no key as no header (as vLLM does)."""

    def __init__(self, store: Store, require: bool | None = None, default_rpm: int | None = None) -> None:
        self.store, self.require, self.default_rpm = store, require, default_rpm
        self._local: Caller | None = None
        self._keys_checked = 0.0
        self._has_keys = False

    def _keys_exist(self) -> bool:
        # Cached for a second: this runs on every request of an open server.
        now = time.monotonic()
        if now - self._keys_checked > 1.0:
            self._has_keys, self._keys_checked = self.store.has_keys(), now
        return self._has_keys

    def authenticate(self, authorization: str | None) -> Caller:
        token = None
        if authorization:
            scheme, _, value = authorization.strip().partition(" ")
            if scheme.lower() != "bearer":
                raise AuthError("the Authorization header must be 'Bearer <API key>'", "invalid_api_key")
            token = value.strip() or None
        required = self.require if self.require is not None else self._keys_exist()
        if token is None or (not required and not token.startswith(KEY_PREFIX)):
            if required:
                raise AuthError(
                    "no API key: send 'Authorization: Bearer <key>'; create one with `chatsmith keys create`",
                    "missing_api_key",
                )
            return self._local_caller()
        found = self.store.key_by_hash(hash_key(token))
        if found is None:
            raise AuthError("the API key is not valid; see `chatsmith keys list`", "invalid_api_key")
        key, user = found
        if key.revoked:
            raise AuthError(f"the API key {key.prefix}… was revoked; create a new one", "invalid_api_key")
        return Caller(user.id, user.name, key.id, key.rpm if key.rpm is not None else self.default_rpm)

    def _local_caller(self) -> Caller:
        if self._local is None:
            u = self.store.user(LOCAL_USER)
            self._local = Caller(u.id, u.name, None, self.default_rpm)
        return self._local
