"""The archive, for real: the API and arq workers as processes, the sandbox upstream over HTTP,
a webhook receiver, and the archive once as a ``file://`` directory and once as a bucket of
moto's S3 server (a server of the test's own, so that it can be taken down): every test runs
against both."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.archive.storage import ObjectStorage, open_storage
from app.exports.csv import FormulaEscaper
from tests.support import (
    ROOT,
    S3_CREDENTIALS,
    S3Server,
    Stack,
    running_stack,
    wait_for,
    wait_until,
)
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.timeout(240)

# The store's own retries are bounded (app.archive.storage); these make the copy's retries fast.
FAST = {
    "GATEWAY_ARCHIVE_RETRY_SECONDS": "0.3",
    "GATEWAY_ARCHIVE_RETRY_MAX_SECONDS": "1",
    "GATEWAY_ARCHIVE_READY_CACHE_SECONDS": "0.5",
    "GATEWAY_SWEEP_INTERVAL_SECONDS": "1",
    "GATEWAY_SWEEP_GRACE_SECONDS": "2",
}


@dataclass
class ArchiveTarget:
    """Where a test's gateway archives, and the switch that takes that store down."""

    kind: str
    url: str
    root: Path | None = None  # file://
    s3: S3Server | None = None
    bucket: str = ""

    def storage(self) -> ObjectStorage:
        return open_storage(self.url)

    async def objects(self) -> list[str]:
        return sorted(o.name for o in await self.storage().list("exports"))

    def down(self) -> None:
        if self.s3 is not None:
            self.s3.stop()
        else:
            assert self.root is not None
            if self.root.exists():
                shutil.rmtree(self.root)
            self.root.write_text("a file where the archive directory should be")

    def up(self) -> None:
        if self.s3 is not None:
            self.s3.start()
            self.s3.create_bucket(self.bucket)
        else:
            assert self.root is not None
            if self.root.is_file():
                self.root.unlink()


@pytest.fixture(params=["file", "s3"])
def target(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ArchiveTarget]:
    if request.param == "file":
        root = tmp_path / "archive"
        yield ArchiveTarget("file", root.as_uri(), root=root)
        return
    server = S3Server(tmp_path).start()
    for name, value in server.environment().items():
        monkeypatch.setenv(name, value)  # for this process, and the stacks it starts
    bucket = "gateway-archive"
    server.create_bucket(bucket)
    try:
        yield ArchiveTarget("s3", f"s3://{bucket}/copies", s3=server, bucket=bucket)
    finally:
        server.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@asynccontextmanager
async def gateway(
    target: ArchiveTarget, redis_url: str, upstream_url: str, logs: Path, **env: str
) -> AsyncIterator[tuple[Stack, httpx.AsyncClient]]:
    """A stack (API + one worker) archiving to ``target``, with fast retries and sweeps, and
    a client of it."""
    settings: dict[str, Any] = {"GATEWAY_ARCHIVE_URL": target.url, **FAST, **env}
    with running_stack(redis_url, upstream_url, logs, **settings) as stack:
        async with stack.client() as api:
            yield stack, api


def unique_filter() -> str:
    """A query of the test's own: nothing coalesces with another test's export."""
    return f"batch=={uuid.uuid4().hex[:8]}"


async def archived(api: httpx.AsyncClient, export_id: str, timeout: float = 40) -> dict[str, Any]:
    """The export once its copy is archived."""
    found: dict[str, Any] = {}

    async def done() -> bool:
        nonlocal found
        found = (await api.get(f"/v1/exports/{export_id}")).json()
        archive = found.get("archive") or {}
        assert archive.get("state") != "failed", found
        return archive.get("state") == "archived"

    await wait_until(done, timeout=timeout, interval=0.2)
    return found


def merged_from_upstream(links: list[str]) -> bytes:
    """The files as one CSV, computed here from upstream's files: the first whole, the others
    without their header line (the sandbox writes LF-terminated files without a BOM)."""
    parts = []
    for number, link in enumerate(links):
        body = httpx.get(link, timeout=10).raise_for_status().content
        parts.append(body if number == 0 else body.split(b"\n", 1)[1])
    return b"".join(parts)


def events(receiver: Receiver, path: str) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in receiver.requests(path)]


async def test_a_three_file_export_is_archived_once_with_its_sha256_and_rows(
    target: ArchiveTarget,
    redis_url: str,
    upstream_url: str,
    sandbox: httpx.Client,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    sandbox.post("/_sandbox/config", json={"rows": 250, "rows_per_file": 100}).raise_for_status()
    path = "/hooks/archived"
    async with gateway(target, redis_url, upstream_url, tmp_path) as (_stack, api):
        created = await api.post(
            "/v1/exports",
            json={
                "filter": unique_filter(),
                "callback_url": f"http://127.0.0.1:{receiver.port}{path}",
                "metadata": {"note": "../../not-a-name"},
            },
        )
        export_id = created.json()["id"]
        completed = await wait_for(api, export_id, timeout=30)
        assert completed["archive"]["state"] in ("pending", "archived")
        expected = merged_from_upstream(completed["links"])
        done = await archived(api, export_id)

        copy = done["archive"]
        assert copy["sha256"] == hashlib.sha256(expected).hexdigest()
        assert (copy["bytes"], copy["rows"]) == (len(expected), 250)
        assert done["expires_at"] == copy["expires_at"]  # a year beats upstream's 30 days
        assert done["links_expire_at"] == completed["links_expire_at"]
        if completed["archive"]["state"] == "pending":  # before the copy, the links' window
            assert completed["expires_at"] == completed["links_expire_at"]
        names = await target.objects()
        assert len(names) == 1 and re.fullmatch(r"exports/[A-Za-z0-9_-]+\.csv", names[0])
        stored = b"".join([c async for c in target.storage().read(names[0])])
        assert stored == expected
        await wait_until(lambda: len(events(receiver, path)) >= 2)
        sent = events(receiver, path)
        assert [e["type"] for e in sent] == ["export.completed", "export.archived"]
        assert sent[1]["data"]["archive"]["sha256"] == copy["sha256"]


async def test_csv_is_byte_identical_before_and_after_upstream_deletes_the_files(
    target: ArchiveTarget,
    redis_url: str,
    upstream_url: str,
    sandbox: httpx.Client,
    tmp_path: Path,
) -> None:
    sandbox.post(
        "/_sandbox/config", json={"rows": 250, "rows_per_file": 100, "retention_seconds": 6}
    ).raise_for_status()
    target.down()  # no copy yet: /csv serves upstream's files first
    async with gateway(
        target, redis_url, upstream_url, tmp_path, GATEWAY_LINK_RETENTION_SECONDS="6"
    ) as (_stack, api):
        export_id = (await api.post("/v1/exports", json={"filter": unique_filter()})).json()["id"]
        completed = await wait_for(api, export_id, timeout=30)
        before = await api.get(f"/v1/exports/{export_id}/csv")
        assert before.status_code == 200 and "x-export-source" not in before.headers
        target.up()
        await archived(api, export_id)

        async def links_gone() -> bool:
            body = (await api.get(f"/v1/exports/{export_id}")).json()
            return bool(body["links"] == [] and body["status"] == "completed")

        await wait_until(links_gone, timeout=30, interval=0.2)
        assert httpx.get(completed["links"][0], timeout=10).status_code == 404
        after = await api.get(f"/v1/exports/{export_id}/csv")

        assert after.status_code == 200
        assert after.headers["x-export-source"] == "archive"
        assert after.content == before.content
        assert int(after.headers["content-length"]) == len(before.content)

        # with formulas escaped, from the copy too: upstream's files are gone
        escaped = await api.get(f"/v1/exports/{export_id}/csv?escape_formulas=true")
        assert escaped.status_code == 200
        assert escaped.headers["x-export-source"] == "archive"
        assert "etag" not in escaped.headers and "accept-ranges" not in escaped.headers
        assert escaped.content == FormulaEscaper().feed(before.content)
        assert escaped.content.count(b"\n") == before.content.count(b"\n") > 250


async def test_range_and_etag_behave_on_an_archived_copy(
    target: ArchiveTarget,
    redis_url: str,
    upstream_url: str,
    sandbox: httpx.Client,
    tmp_path: Path,
) -> None:
    sandbox.post("/_sandbox/config", json={"rows": 120, "rows_per_file": 50}).raise_for_status()
    async with gateway(target, redis_url, upstream_url, tmp_path) as (_stack, api):
        export_id = (await api.post("/v1/exports", json={"filter": unique_filter()})).json()["id"]
        await wait_for(api, export_id, timeout=30)
        sha256 = (await archived(api, export_id))["archive"]["sha256"]
        url = f"/v1/exports/{export_id}/csv"
        whole = await api.get(url)
        size = len(whole.content)

        assert whole.headers["etag"] == f'"{sha256}"'
        assert hashlib.sha256(whole.content).hexdigest() == sha256
        assert whole.headers["accept-ranges"] == "bytes"
        assert int(whole.headers["content-length"]) == size
        middle = await api.get(url, headers={"Range": "bytes=10-19"})
        assert middle.status_code == 206
        assert middle.content == whole.content[10:20]
        assert middle.headers["content-range"] == f"bytes 10-19/{size}"
        tail = await api.get(url, headers={"Range": "bytes=-7"})
        assert (tail.status_code, tail.content) == (206, whole.content[-7:])
        rest = await api.get(url, headers={"Range": f"bytes={size - 3}-"})
        assert (rest.status_code, rest.content) == (206, whole.content[-3:])
        beyond = await api.get(url, headers={"Range": f"bytes={size}-"})
        assert beyond.status_code == 416
        assert beyond.headers["content-type"].startswith("application/problem+json")
        assert beyond.headers["content-range"] == f"bytes */{size}"
        stale = await api.get(url, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
        assert (stale.status_code, stale.content) == (200, whole.content)
        same = await api.get(url, headers={"If-None-Match": f'"{sha256}"'})
        assert (same.status_code, same.content) == (304, b"")


async def test_twenty_coalesced_exports_share_one_archived_copy(
    target: ArchiveTarget,
    redis_url: str,
    upstream_url: str,
    sandbox: httpx.Client,
    tmp_path: Path,
) -> None:
    sandbox.post("/_sandbox/config", json={"task_seconds": 2.0}).raise_for_status()
    query = {"filter": unique_filter()}
    async with gateway(target, redis_url, upstream_url, tmp_path) as (stack, api):
        ids = [(await api.post("/v1/exports", json=query)).json()["id"] for _ in range(20)]
        for export_id in ids:
            await wait_for(api, export_id, timeout=30)
        copies = [(await archived(api, export_id))["archive"] for export_id in ids]

        assert len({c["sha256"] for c in copies}) == 1
        assert len({c["archived_at"] for c in copies}) == 1
        assert len(await target.objects()) == 1
        assert stack.log_text().count('"archived"') == 1


async def test_the_store_down_at_completion_delays_only_the_copy(
    target: ArchiveTarget,
    redis_url: str,
    upstream_url: str,
    sandbox: httpx.Client,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    path = "/hooks/store-down"
    target.down()
    async with gateway(target, redis_url, upstream_url, tmp_path) as (stack, api):
        export_id = (
            await api.post(
                "/v1/exports",
                json={
                    "filter": unique_filter(),
                    "callback_url": f"http://127.0.0.1:{receiver.port}{path}",
                },
            )
        ).json()["id"]
        completed = await wait_for(api, export_id, timeout=30)
        await wait_until(lambda: len(events(receiver, path)) >= 1, timeout=10)
        assert events(receiver, path)[0]["type"] == "export.completed"
        still = (await api.get(f"/v1/exports/{export_id}")).json()
        assert still["archive"]["state"] == "pending"
        assert (await api.get(f"/v1/exports/{export_id}/csv")).status_code == 200
        ready = await api.get("/readyz")
        assert ready.status_code == 503 and "archive" in ready.json()["detail"]

        target.up()
        done = await archived(api, export_id)

        assert (
            done["archive"]["sha256"]
            == hashlib.sha256(merged_from_upstream(completed["links"])).hexdigest()
        )
        await wait_until(lambda: len(events(receiver, path)) >= 2)
        assert [e["type"] for e in events(receiver, path)] == [
            "export.completed",
            "export.archived",
        ]
        await wait_until(lambda: httpx.get(f"{stack.api_url}/readyz", timeout=5).status_code == 200)


async def test_a_worker_killed_mid_upload_leaves_no_copy_and_another_makes_it(
    target: ArchiveTarget,
    redis_url: str,
    upstream_url: str,
    sandbox: httpx.Client,
    tmp_path: Path,
) -> None:
    # ~80 chunks of 512 rows at 0.05 s each: the copy takes about 4 s
    sandbox.post(
        "/_sandbox/config",
        json={"rows": 40_000, "rows_per_file": 20_000, "csv_chunk_delay_seconds": 0.05},
    ).raise_for_status()
    with running_stack(
        redis_url,
        upstream_url,
        tmp_path,
        workers=0,
        GATEWAY_ARCHIVE_URL=target.url,
        GATEWAY_WORKER_JOB_TIMEOUT_SECONDS="10",
        **FAST,
    ) as stack:
        first = stack.start_worker("worker-first")
        async with stack.client() as api:
            export_id = (await api.post("/v1/exports", json={"filter": unique_filter()})).json()[
                "id"
            ]
            await wait_for(api, export_id, timeout=30)
            await wait_until(lambda: "archive copy started" in stack.log_text(), timeout=20)
            time.sleep(1.0)  # well into the upload
            stack.stop(first, signal.SIGKILL)

            killed = (await api.get(f"/v1/exports/{export_id}")).json()
            assert killed["archive"]["state"] == "pending"
            assert await target.objects() == []

            stack.start_worker("worker-second")
            done = await archived(api, export_id, timeout=60)

            names = await target.objects()
            assert len(names) == 1
            stored = b"".join([c async for c in target.storage().read(names[0])])
            assert hashlib.sha256(stored).hexdigest() == done["archive"]["sha256"]
            assert done["archive"]["rows"] == 40_000


async def test_a_copy_past_its_retention_is_deleted_and_the_export_expires(
    target: ArchiveTarget,
    redis_url: str,
    upstream_url: str,
    sandbox: httpx.Client,
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    path = "/hooks/retention"
    async with gateway(
        target,
        redis_url,
        upstream_url,
        tmp_path,
        GATEWAY_LINK_RETENTION_SECONDS="2",
        GATEWAY_ARCHIVE_RETENTION_SECONDS="5",
        GATEWAY_EXPIRY_WARNING_SECONDS="1",
    ) as (_stack, api):
        export_id = (
            await api.post(
                "/v1/exports",
                json={
                    "filter": unique_filter(),
                    "callback_url": f"http://127.0.0.1:{receiver.port}{path}",
                },
            )
        ).json()["id"]
        await wait_for(api, export_id, timeout=30)
        done = await archived(api, export_id)
        assert done["expires_at"] == done["archive"]["expires_at"]
        assert len(await target.objects()) == 1

        expired = await wait_for(api, export_id, ("expired",), timeout=30)

        assert expired["links"] == []
        assert (await api.get(f"/v1/exports/{export_id}/csv")).status_code == 410

        async def deleted() -> bool:
            return await target.objects() == []

        await wait_until(deleted, timeout=20)
        await wait_until(lambda: "export.expired" in [e["type"] for e in events(receiver, path)])
        assert [e["type"] for e in events(receiver, path)] == [
            "export.completed",
            "export.archived",
            "export.expiring",
            "export.expired",
        ]


async def test_verify_command_rereads_the_copy_and_finds_a_tampered_one(
    target: ArchiveTarget,
    redis_url: str,
    upstream_url: str,
    sandbox: httpx.Client,
    tmp_path: Path,
) -> None:
    async with gateway(
        target, redis_url, upstream_url, tmp_path, GATEWAY_ARCHIVE_VERIFY_SAMPLE="0"
    ) as (stack, api):
        export_id = (await api.post("/v1/exports", json={"filter": unique_filter()})).json()["id"]
        await wait_for(api, export_id, timeout=30)
        good = (await archived(api, export_id))["archive"]
        ok = _verify(stack, target, export_id)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert json.loads(ok.stdout)["sha256"] == good["sha256"]
        (name,) = await target.objects()
        await target.storage().write(name, _forged())

        bad = _verify(stack, target, export_id)

        assert bad.returncode == 1
        finding = json.loads(bad.stdout)
        assert (finding["outcome"], finding["expected_sha256"]) == ("mismatch", good["sha256"])


async def test_the_sweep_finds_a_tampered_copy_and_makes_it_again(
    target: ArchiveTarget,
    redis_url: str,
    upstream_url: str,
    sandbox: httpx.Client,
    tmp_path: Path,
) -> None:
    async with gateway(target, redis_url, upstream_url, tmp_path) as (stack, api):
        export_id = (await api.post("/v1/exports", json={"filter": unique_filter()})).json()["id"]
        await wait_for(api, export_id, timeout=30)
        good = (await archived(api, export_id))["archive"]
        (name,) = await target.objects()
        await target.storage().write(name, _forged())

        async def copied_again() -> bool:
            stored = b"".join([c async for c in target.storage().read(name)])
            return bool(hashlib.sha256(stored).hexdigest() == good["sha256"])

        await wait_until(copied_again, timeout=40, interval=0.3)
        assert (await archived(api, export_id))["archive"]["sha256"] == good["sha256"]
        assert "archived copy failed verification" in stack.log_text()


async def _forged() -> AsyncIterator[bytes]:
    yield b"id,signer_id\n1,forged\n"


def _verify(
    stack: Stack, target: ArchiveTarget, export_id: str
) -> subprocess.CompletedProcess[str]:
    env = {**stack.environment(), "GATEWAY_ARCHIVE_URL": target.url}
    return subprocess.run(
        [sys.executable, "-m", "app.cli.main", "verify", export_id],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_an_unusable_archive_is_reported_by_readyz_and_at_start_up_without_secrets(
    target: ArchiveTarget,
    redis_url: str,
    upstream_url: str,
    sandbox: httpx.Client,
    tmp_path: Path,
) -> None:
    target.down()
    async with gateway(target, redis_url, upstream_url, tmp_path) as (stack, _api):
        await wait_until(lambda: "archive unavailable" in stack.log_text(), timeout=30)
        await wait_until(
            lambda: "archive" in httpx.get(f"{stack.api_url}/readyz", timeout=10).json(),
            timeout=30,
        )

        ready = httpx.get(f"{stack.api_url}/readyz", timeout=10)

        assert ready.status_code == 503
        assert ready.headers["content-type"].startswith("application/problem+json")
        assert ready.json()["archive"] == "down"
        assert target.url.split("://")[0] in ready.json()["detail"]
        metrics = httpx.get(f"{stack.api_url}/metrics", timeout=10).text
        for secret in (
            S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        ):
            assert secret not in ready.text
            assert secret not in stack.log_text()
            assert secret not in metrics
        target.up()
        await wait_until(
            lambda: httpx.get(f"{stack.api_url}/readyz", timeout=5).status_code == 200,
            timeout=30,
        )


async def test_without_an_archive_the_export_has_no_archive_member(
    stack: Stack, sandbox: httpx.Client
) -> None:
    async with stack.client() as api:
        export_id = (await api.post("/v1/exports", json={"filter": unique_filter()})).json()["id"]
        done = await wait_for(api, export_id, timeout=30)

        assert done["archive"] is None
        assert done["links_expire_at"] == done["expires_at"]
        assert "x-export-source" not in (await api.get(f"/v1/exports/{export_id}/csv")).headers
        assert "archive" not in httpx.get(f"{stack.api_url}/readyz", timeout=5).json()
