"""Sandbox upstream: an in-memory imitation of the Ironclad Clickwrap (PactSafe) REST API v1.1.

Run it with `python -m app.sandbox --port 8090`; its upstream base URL is then
`http://127.0.0.1:8090/v1.1`. Modules: `config` (every knob), `filters` (the filter language
and test markers), `data` (deterministic records and streamed CSV), `state` (tasks, faults,
stats), `server` (routes and fault-injecting middleware), `testing` (run one in a thread).

Upstream routes (bearer token): `POST /v1.1/tasks/export/activity`,
`GET /v1.1/tasks/export/{id}`, `GET /v1.1/activity`, `GET /v1.1/sites/{id}/exportFields`.
CSV files (no token, like pre-signed URLs): `GET /v1.1/files/{task_id}/{n}.csv?signature=...`.
Control routes (no token): `GET|POST /_sandbox/config`, `GET /_sandbox/stats`,
`POST /_sandbox/reset`, `GET /_sandbox/health`.
"""

from app.sandbox.config import SandboxConfig
from app.sandbox.server import create_app, serve

__all__ = ["SandboxConfig", "create_app", "serve"]
