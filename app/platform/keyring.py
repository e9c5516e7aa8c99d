"""Keys -> who holds them: the one matching rule for API keys and console admin keys.

Only sha256 digests are kept in memory. A presented key is hashed and compared against every
digest in constant time, so neither the answer nor its timing tells which holder, if any, a
wrong key came close to. The match also names the digest, so that a console session can be
checked against the configured keys again on every request (a key removed from the settings
ends its sessions at the next restart of the API).
"""

from __future__ import annotations

import hashlib
import hmac


class KeyRing:
    def __init__(self, digests: dict[str, str]) -> None:
        """``digests``: sha256 hex digest of each key -> its holder."""
        self._digests = [(bytes.fromhex(d), holder) for d, holder in digests.items()]

    def match(self, key: str) -> tuple[str, str] | None:
        """The holder of ``key`` and the key's digest (hex), or None."""
        presented = hashlib.sha256(key.encode()).digest()
        found: str | None = None
        for digest, holder in self._digests:
            if hmac.compare_digest(presented, digest):
                found = holder
        return None if found is None else (found, presented.hex())

    def holder_of_digest(self, digest_hex: str) -> str | None:
        """The holder of the key with this digest, while that key is configured."""
        try:
            presented = bytes.fromhex(digest_hex)
        except ValueError:
            return None
        found: str | None = None
        for digest, holder in self._digests:
            if hmac.compare_digest(presented, digest):
                found = holder
        return found
