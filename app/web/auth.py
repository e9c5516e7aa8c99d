"""API keys -> client id.

Keys are configured as ``client_id:key`` or ``client_id:sha256:<hex>``; only digests are kept in
memory, and a presented key is matched by ``app.platform.keyring.KeyRing`` (constant time, so
neither the answer nor its timing tells which client, if any, a wrong key came close to).
"""

from __future__ import annotations

from app.platform.errors import Unauthenticated
from app.platform.keyring import KeyRing


class ApiKeys:
    def __init__(self, digests: dict[str, str]) -> None:
        self.ring = KeyRing(digests)

    def client_for(self, authorization: str | None) -> str:
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated("send Authorization: Bearer <API key>")
        found = self.ring.match(key.strip())
        if found is None:
            raise Unauthenticated("the API key is not valid")
        return found[0]
