"""``GET /v1/exports/{id}/csv`` and ``export-gateway download``, for real: the API and a worker
as processes, the sandbox's CSV files over HTTP. The links are fetched here too and joined by
an independent rule to say what the one CSV must be, byte for byte."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI, Request, Response

from app.platform.localredis import LocalRedis
from tests.support import (
    KEYS,
    ROOT,
    SANDBOX_TOKEN,
    ServerThread,
    Stack,
    running_stack,
    wait_for,
)

BOM = b"\xef\xbb\xbf"
FIELDS = ["event_type", "connection_data.page_title", "custom_data.notes"]
NEVER = "event_type==__never__"  # the sandbox never finishes such a task
CLI = ROOT / ".venv" / "bin" / "export-gateway"


@pytest.fixture(scope="module")
def gateway(
    redis_server: LocalRedis, sandbox_server: ServerThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """One API + worker for the module (database 0, which per-test fixtures never use)."""
    client = redis.Redis(port=redis_server.port, db=0)
    client.flushdb()
    client.close()
    with running_stack(
        f"redis://127.0.0.1:{redis_server.port}/0",
        f"{sandbox_server.url}/v1.1",
        tmp_path_factory.mktemp("csv-gateway"),
    ) as stack:
        yield stack


@pytest.fixture(autouse=True)
def _fresh_sandbox(sandbox: httpx.Client) -> None:
    """Every test starts from the sandbox's startup configuration."""


def unique_filter(*clauses: str) -> str:
    """A query of the test's own: nothing coalesces with another test's export."""
    return " and ".join([f"batch=={uuid.uuid4().hex[:8]}", *clauses])


async def completed(api: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    created = (await api.post("/v1/exports", json=body)).json()
    done = await wait_for(api, created["id"])
    assert done["status"] == "completed", done
    return done


def joined(files: list[bytes], newline: bytes) -> bytes:
    """The files as one CSV, by the issue's rule: BOMs dropped, the first line of every file
    but the first dropped (header names hold no line break), a missing final line break added."""
    out = b""
    for number, data in enumerate(files):
        data = data.removeprefix(BOM)
        if number:
            data = data.partition(b"\n")[2]
        if data and not data.endswith(b"\n"):
            data += newline
        out += data
    return out


def records(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode().removeprefix("\ufeff"), newline="")))


@pytest.mark.parametrize(
    "files",
    [
        {},
        {"csv_bom": True, "csv_trailing_newline": False},
        {"csv_tricky_values": True, "csv_crlf": True, "csv_trailing_newline": False},
    ],
    ids=["plain", "bom-and-no-final-newline", "quoted-line-breaks-crlf"],
)
async def test_csv_of_a_three_file_export_is_the_files_joined_with_one_header(
    gateway: Stack, sandbox: httpx.Client, files: dict[str, Any]
) -> None:
    sandbox.post("/_sandbox/config", json=files).raise_for_status()
    async with gateway.client() as api:
        done = await completed(api, {"fields": FIELDS, "filter": unique_filter()})
        response = await api.get(f"/v1/exports/{done['id']}/csv")
    parts = [httpx.get(link).content for link in done["links"]]
    assert len(parts) == 3
    assert all(part.startswith(BOM) == bool(files.get("csv_bom")) for part in parts)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment; filename=")
    assert done["id"] in disposition and disposition.endswith('.csv"')
    newline = b"\r\n" if files.get("csv_crlf") else b"\n"
    assert response.content == joined(parts, newline)
    # and as CSV records: one header, then every row of every file, quoted line breaks intact
    rows = records(response.content)
    assert rows[0] == ["id", "signer_id", "created_time", *FIELDS]
    assert rows == records(parts[0]) + records(parts[1])[1:] + records(parts[2])[1:]
    assert len(rows) == 1 + 250
    if files.get("csv_tricky_values"):
        assert any("\n" in value for row in rows for value in row)


async def test_csv_before_completion_is_409(gateway: Stack) -> None:
    async with gateway.client() as api:
        created = await api.post(
            "/v1/exports", json={"filter": unique_filter("event_type==__never__")}
        )
        response = await api.get(f"/v1/exports/{created.json()['id']}/csv")
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 409 and "try again once it has completed" in problem["detail"]


async def test_csv_of_another_clients_export_is_404(gateway: Stack) -> None:
    async with gateway.client("alice") as alice, gateway.client("bob") as bob:
        done = await completed(alice, {"filter": unique_filter()})
        response = await bob.get(f"/v1/exports/{done['id']}/csv")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def read_into(api: httpx.AsyncClient, path: str, received: bytearray) -> None:
    async with api.stream("GET", path) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_bytes():
            received += chunk


async def test_an_upstream_error_mid_download_ends_the_response_with_an_error(
    gateway: Stack, sandbox: httpx.Client
) -> None:
    async with gateway.client() as api:
        done = await completed(api, {"filter": unique_filter()})
        sandbox.post("/_sandbox/config", json={"csv_fault_after_bytes": 3000}).raise_for_status()
        received = bytearray()
        with pytest.raises(httpx.RemoteProtocolError):
            await read_into(api, f"/v1/exports/{done['id']}/csv", received)
    assert 0 < len(received) <= 3000  # the start arrived, then the connection broke
    assert "csv download aborted" in gateway.log_text()


async def test_rerun_makes_a_fresh_export_of_the_same_query_callback_and_metadata(
    gateway: Stack,
) -> None:
    body = {
        "filter": unique_filter("created_time>=2020-10-10 and event_type==agreed"),
        "fields": ["connection_data.remote_address"],
        "site_id": 5193,
        "callback_url": "http://127.0.0.1:1024/hooks/exports",  # loopback, nothing listens
        "metadata": {"ticket": "OPS-12"},
    }
    async with gateway.client() as api:
        first = await completed(api, body)
        response = await api.post(f"/v1/exports/{first['id']}/rerun")
        assert response.status_code == 202
        again = response.json()
        assert response.headers["location"] == f"/v1/exports/{again['id']}"
        second = await wait_for(api, again["id"])
    assert again["id"] != first["id"]
    for member in ("filter", "fields", "site_id", "callback_url", "metadata"):
        assert second[member] == first[member], member
    assert second["status"] == "completed"
    assert second["upstream_task_id"] != first["upstream_task_id"]  # asked upstream again


async def test_rerun_of_an_unfinished_export_is_409(gateway: Stack) -> None:
    async with gateway.client() as api:
        created = await api.post(
            "/v1/exports", json={"filter": unique_filter("event_type==__never__")}
        )
        response = await api.post(f"/v1/exports/{created.json()['id']}/rerun")
    assert response.status_code == 409
    assert response.json()["export_status"] in ("queued", "running")


def cli(
    *args: str, url: str, key: str | None = KEYS["alice"], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    command = [str(CLI), "download", *args, "--url", url]
    if key:
        command += ["--api-key", key]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run(
        command, capture_output=True, text=True, timeout=60, check=False, env=env, cwd=cwd
    )


async def test_cli_download_writes_the_same_bytes_as_the_csv_route(
    gateway: Stack, sandbox: httpx.Client, tmp_path: Path
) -> None:
    sandbox.post("/_sandbox/config", json={"csv_bom": True, "csv_tricky_values": True})
    async with gateway.client() as api:
        done = await completed(api, {"fields": FIELDS, "filter": unique_filter()})
        expected = (await api.get(f"/v1/exports/{done['id']}/csv")).content
    target = tmp_path / "out.csv"
    result = cli(done["id"], "-o", str(target), url=gateway.api_url)
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == expected
    assert f"({len(expected)} bytes)" in result.stderr and "MB/s" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]  # no temporary file left


async def test_cli_download_of_an_unfinished_export_exits_1_with_the_problem(
    gateway: Stack, tmp_path: Path
) -> None:
    async with gateway.client() as api:
        created = (
            await api.post("/v1/exports", json={"filter": unique_filter("event_type==__never__")})
        ).json()
    result = cli(created["id"], "-o", str(tmp_path / "x.csv"), url=gateway.api_url)
    assert result.returncode == 1
    assert "409" in result.stderr and "try again once it has completed" in result.stderr
    assert not list(tmp_path.iterdir())


async def test_cli_download_cut_short_exits_3_and_writes_nothing(
    gateway: Stack, sandbox: httpx.Client, tmp_path: Path
) -> None:
    async with gateway.client() as api:
        done = await completed(api, {"filter": unique_filter()})
    sandbox.post("/_sandbox/config", json={"csv_fault_after_bytes": 3000}).raise_for_status()
    result = cli(done["id"], "-o", str(tmp_path / "x.csv"), url=gateway.api_url)
    assert result.returncode == 3, result.stderr
    assert "transfer failed" in result.stderr
    assert not list(tmp_path.iterdir())


def test_cli_download_without_a_key_is_a_usage_error(tmp_path: Path) -> None:
    result = cli("exp_x", url="http://127.0.0.1:9", key=None, cwd=tmp_path)  # no .gateway/ there
    assert result.returncode == 2
    assert "GATEWAY_API_KEY" in result.stderr


def test_the_memory_benchmark_runs_end_to_end() -> None:
    """A smoke run of bench/csv_memory.py (the real figures come from its full run)."""
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "csv_memory.py"),
            "--rows",
            "3000",
            "--rows-per-file",
            "1000",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "SANDBOX_"))},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["bytes"] == figures["expected_bytes"] > 0
    assert figures["files"] == 3 and figures["rss_samples"] > 0


def test_the_openapi_document_describes_the_csv_and_rerun_routes() -> None:
    from app.main import app

    paths = app.openapi()["paths"]
    csv_route = paths["/v1/exports/{export_id}/csv"]["get"]
    assert "text/csv" in csv_route["responses"]["200"]["content"]
    assert {"404", "409", "410"} <= set(csv_route["responses"])
    assert "202" in paths["/v1/exports/{export_id}/rerun"]["post"]["responses"]


async def test_links_are_fetched_without_credentials_and_redirects_are_not_followed(
    gateway: Stack, sandbox: httpx.Client, sandbox_server: ServerThread
) -> None:
    seen: list[dict[str, str]] = []
    mode = {"redirect": False}
    relay = FastAPI()

    @relay.get("/v1.1/files/{task_id}/{name}")
    async def file(task_id: str, name: str, request: Request) -> Response:
        seen.append(dict(request.headers))
        real = f"{sandbox_server.url}{request.url.path}?{request.url.query}"
        if mode["redirect"]:
            return Response(status_code=302, headers={"Location": real})
        async with httpx.AsyncClient() as client:
            upstream = await client.get(real)
        return Response(upstream.content, upstream.status_code, media_type="text/csv")

    host = ServerThread(relay).start()
    try:
        sandbox.post("/_sandbox/config", json={"public_base_url": host.url}).raise_for_status()
        async with gateway.client() as api:
            done = await completed(api, {"filter": unique_filter()})
            assert all(link.startswith(host.url) for link in done["links"])
            merged = await api.get(f"/v1/exports/{done['id']}/csv")
            mode["redirect"] = True
            redirected = await api.get(f"/v1/exports/{done['id']}/csv")
    finally:
        host.stop()
    assert merged.status_code == 200 and len(records(merged.content)) == 251
    assert len(seen) == 3 + 1
    for headers in seen:
        assert "authorization" not in headers
        assert not any(SANDBOX_TOKEN in value for value in headers.values())
    assert redirected.status_code == 502
    assert "answered 302 for file 1 of 3" in redirected.json()["detail"]
