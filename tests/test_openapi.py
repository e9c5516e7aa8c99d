"""The OpenAPI document is complete and true, and /docs works without internet access."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from app.webhooks.schemas import WEBHOOK_EVENTS
from tests.support import KEYS, Stack, running_stack

PROBLEM = "application/problem+json"
PROBLEM_REF = "#/components/schemas/Problem"


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
    ]


async def test_docs_page_loads_only_local_assets_that_all_answer(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as web:
        page = await web.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        html = page.text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
        urls += re.findall(r"""url:\s*["']([^"']+)["']""", html)
        assert "/docs/static/swagger-ui-bundle.js" in urls
        assert "/docs/static/swagger-ui.css" in urls
        assert "://" not in html.replace("window.location.origin", "")
        for url in urls:
            assert url.startswith("/"), url
            asset = await web.get(url)
            assert asset.status_code == 200, url
            assert asset.content, url


async def test_docs_render_the_openapi_3_1_document_with_a_swagger_ui_that_reads_3_1(
    stack: Stack,
) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as web:
        html = (await web.get("/docs")).text
        bundle = (await web.get("/docs/static/swagger-ui-bundle.js")).text
        spec = (await web.get("/openapi.json")).json()
    assert re.findall(r"""url:\s*["']([^"']+)["']""", html) == ["/openapi.json"]
    assert spec["openapi"].startswith("3.1")
    # Swagger UI reads OpenAPI 3.1 from version 5 on; the bundle names its own version.
    versions = {int(v) for v in re.findall(r'"(\d+)\.\d+\.\d+"', bundle)}
    assert 5 in versions, sorted(versions)


async def test_the_served_openapi_document_validates(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as web:
        spec = (await web.get("/openapi.json")).json()
    validate(spec)  # openapi-spec-validator, OpenAPI 3.1 rules: raises on any violation


async def test_every_webhook_type_is_in_the_document_with_its_signature_headers(
    stack: Stack,
) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as web:
        spec = (await web.get("/openapi.json")).json()
    assert list(spec["webhooks"]) == [name for name, _ in WEBHOOK_EVENTS]
    assert {"export.completed", "export.failed", "export.expiring", "export.expired"} <= set(
        spec["webhooks"]
    )
    for name, item in spec["webhooks"].items():
        post = item["post"]
        headers = {p["name"] for p in post["parameters"] if p["in"] == "header"}
        assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}, name
        body = post["requestBody"]["content"]["application/json"]["schema"]["allOf"]
        assert body[0] == {"$ref": "#/components/schemas/WebhookEvent"}
        assert body[1]["properties"]["type"]["const"] == name
        assert "2XX" in post["responses"], name
    event = spec["components"]["schemas"]["WebhookEvent"]
    assert event["properties"]["data"] == {"$ref": "#/components/schemas/Export"}


async def test_every_route_documents_its_answers_and_problems(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as web:
        spec = (await web.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    for name in ("Export", "ExportRequest", "ExportPage", "ErrorInfo"):
        assert schemas[name].get("examples"), name
    expected = {
        ("/v1/exports", "post"): {"202", "400", "401", "409", "413", "415", "422", "429", "503"},
        ("/v1/exports", "get"): {"200", "401", "422", "503"},
        ("/v1/exports/{export_id}", "get"): {"200", "401", "404", "503"},
        ("/v1/exports/{export_id}", "delete"): {"200", "401", "404", "409", "503"},
    }
    for path, method, operation in _operations(spec):
        assert operation.get("summary"), (path, method)
        responses = operation["responses"]
        if (path, method) in expected:
            assert expected[(path, method)] <= set(responses), (path, method, set(responses))
        if path.startswith("/v1/"):
            assert operation["security"] == [{"HTTPBearer": []}], path
        for code, response in responses.items():
            assert response.get("description"), (path, method, code)
            if code[0] in "45":
                content = response["content"]
                assert list(content) == [PROBLEM], (path, method, code)
                assert content[PROBLEM]["schema"] == {"$ref": PROBLEM_REF}
                assert content[PROBLEM]["example"]["status"] == int(code)
    post = spec["paths"]["/v1/exports"]["post"]
    assert "Location" in post["responses"]["202"]["headers"]
    assert "Retry-After" in post["responses"]["429"]["headers"]
    assert any(p["name"] == "Idempotency-Key" for p in post["parameters"])


@pytest.fixture
def fuzzed_stack(
    redis_url: str, upstream_url: str, sandbox: httpx.Client, tmp_path: Path
) -> Iterator[Stack]:
    """API and one worker, so stateful runs see exports go running and completed; ready (a
    worker has reported) before the run, or ``/readyz`` would rightly answer 503."""
    with running_stack(redis_url, upstream_url, tmp_path, workers=1) as gateway:
        gateway.wait_ready()
        yield gateway


def test_schemathesis_finds_no_server_error_and_no_schema_violation(
    fuzzed_stack: Stack, tmp_path: Path
) -> None:
    report = tmp_path / "schemathesis.json"
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{fuzzed_stack.api_url}/openapi.json",
            "--header",
            f"Authorization: Bearer {KEYS['alice']}",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,"
            "response_headers_conformance,response_schema_conformance,"
            "negative_data_rejection",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            "20",
            "--max-time",  # fuzzing and stateful runs repeat until this is spent
            "20",
            "--seed",
            "5",
            "--workers",  # one: CPython 3.11's ast.parse is not thread-safe (gh-106905)
            "1",
            "--request-timeout",
            "10",
            "--generation-database",
            "none",
            "--no-color",
            "--report",
            "json",
            "--report-json-path",
            str(report),
        ],
        cwd=tmp_path,  # schemathesis leaves files where it runs
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-8000:]
    assert "No issues found" in output or "passed" in output, output[-4000:]
