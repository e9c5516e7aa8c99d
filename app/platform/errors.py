"""One error tree for everything a caller can be told, rendered as RFC 9457 problem+json.

    GatewayError                 status, title, detail, errors (member-level problems), headers
    ├── BadRequest           400
    ├── Unauthenticated      401  (with WWW-Authenticate: Bearer)
    ├── NotFound             404  (also: another client's export)
    ├── Conflict             409
    ├── Gone                 410
    ├── PayloadTooLarge      413
    ├── UnsupportedMediaType 415
    ├── InvalidRequest       422  (``errors`` names each member at fault)
    ├── TooManyRequests      429  (with Retry-After)
    ├── UpstreamFailure      502  (upstream refused a pass-through request)
    └── ServiceUnavailable   503  (with Retry-After: Redis or upstream is unreachable)

Services raise these; ``app.main`` installs the one handler that renders them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

PROBLEM_JSON = "application/problem+json"


@dataclass(frozen=True, slots=True)
class MemberProblem:
    """One member of the request that is wrong, e.g. ``fields[2]`` or ``callback_url``."""

    member: str
    detail: str

    def as_json(self) -> dict[str, str]:
        if self.member == "body":  # the whole body: the JSON Pointer to the root
            return {"member": self.member, "pointer": "", "detail": self.detail}
        pointer = "/" + self.member.replace("[", "/").replace("]", "").replace(".", "/")
        return {"member": self.member, "pointer": pointer, "detail": self.detail}


class GatewayError(Exception):
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"
    slug: ClassVar[str] = "internal-error"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[MemberProblem] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}
        self.extra = extra or {}

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://export-gateway.internal/problems/{self.slug}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if self.errors:
            body["errors"] = [e.as_json() for e in self.errors]
        body.update(self.extra)
        return body


class BadRequest(GatewayError):
    status, title, slug = 400, "Bad request", "bad-request"


class Unauthenticated(GatewayError):
    status, title, slug = 401, "Unauthenticated", "unauthenticated"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class NotFound(GatewayError):
    status, title, slug = 404, "Not found", "not-found"


class Conflict(GatewayError):
    status, title, slug = 409, "Conflict", "conflict"


class Gone(GatewayError):
    status, title, slug = 410, "Gone", "gone"


class PayloadTooLarge(GatewayError):
    status, title, slug = 413, "Payload too large", "payload-too-large"


class UnsupportedMediaType(GatewayError):
    status, title, slug = 415, "Unsupported media type", "unsupported-media-type"


class InvalidRequest(GatewayError):
    status, title, slug = 422, "Invalid request", "invalid-request"


class RangeNotSatisfiable(GatewayError):
    status, title, slug = 416, "Range not satisfiable", "range-not-satisfiable"


class TooManyRequests(GatewayError):
    status, title, slug = 429, "Too many requests", "too-many-requests"


class UpstreamFailure(GatewayError):
    status, title, slug = 502, "Upstream failure", "upstream-failure"


class ServiceUnavailable(GatewayError):
    status, title, slug = 503, "Service unavailable", "service-unavailable"


def invalid(member: str, detail: str) -> InvalidRequest:
    """A 422 about one member."""
    return InvalidRequest(f"{member}: {detail}", errors=[MemberProblem(member, detail)])
