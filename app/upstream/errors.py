"""Everything that can go wrong talking to Clickwrap, as one tree.

The worker only has to ask one question of an error: will trying again help?

    UpstreamError
    ├── TransientUpstreamError     try again later; ``retry_after`` is upstream's hint, if any
    │   ├── UpstreamThrottled      429, or 503 with Retry-After: upstream asked us to wait
    │   ├── UpstreamServerError    any other 5xx
    │   ├── UpstreamNetworkError   timeouts, refused or reset connections
    │   └── UpstreamBadResponse    a 2xx whose body is not the JSON we can read
    └── PermanentUpstreamError     the request itself is wrong; retrying cannot help
        ├── UpstreamUnauthorized   401 / 403 -> error code ``upstream_unauthorized``
        └── UpstreamRejected       any other 4xx -> error code ``upstream_rejected``

Messages are written by the gateway, never copied from a request, so they cannot carry the
bearer token. Upstream's own error text is included only after redaction and truncation.
"""

from __future__ import annotations


class UpstreamError(Exception):
    """Base of every upstream failure."""

    code = "upstream_unavailable"

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class TransientUpstreamError(UpstreamError):
    def __init__(
        self, message: str, *, status_code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after = retry_after


class UpstreamThrottled(TransientUpstreamError):
    pass


class UpstreamServerError(TransientUpstreamError):
    pass


class UpstreamNetworkError(TransientUpstreamError):
    pass


class UpstreamBadResponse(TransientUpstreamError):
    pass


class PermanentUpstreamError(UpstreamError):
    code = "upstream_rejected"


class UpstreamUnauthorized(PermanentUpstreamError):
    code = "upstream_unauthorized"


class UpstreamRejected(PermanentUpstreamError):
    code = "upstream_rejected"
