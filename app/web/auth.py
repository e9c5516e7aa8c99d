"""API keys -> client id.

Keys are configured as ``client_id:key`` or ``client_id:sha256:<hex>``; only digests are kept in
memory. A presented key is hashed and compared against every digest in constant time, so
neither the answer nor its timing tells which client, if any, a wrong key came close to.
"""

from __future__ import annotations

import hashlib
import hmac

from app.platform.errors import Unauthenticated


class ApiKeys:
    def __init__(self, digests: dict[str, str]) -> None:
        self._digests = [(bytes.fromhex(d), client) for d, client in digests.items()]

    def client_for(self, authorization: str | None) -> str:
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated("send Authorization: Bearer <API key>")
        presented = hashlib.sha256(key.strip().encode()).digest()
        found: str | None = None
        for digest, client in self._digests:
            if hmac.compare_digest(presented, digest):
                found = client
        if found is None:
            raise Unauthenticated("the API key is not valid")
        return found
