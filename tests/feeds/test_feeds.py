"""Feeds end to end: the API and a worker as processes, real Redis, the sandbox upstream made
strict (only ``==`` and ``>=`` with a date) and fed a timeline of activity that arrives while
the test runs. Each test uses a site id of its own, so no two tests share an upstream task."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.connections import create_pool
from pydantic import SecretStr
from redis.asyncio import Redis as AsyncRedis

from app.config import Settings
from app.exports.schemas import Window
from app.feeds.scheduler import FeedScheduler
from app.feeds.schemas import FeedRecord, RunState
from app.platform.queue import ArqJobQueue, redis_settings
from app.wiring.runtime import Runtime, build_runtime
from tests.support import KEYS, SANDBOX_TOKEN, Stack, wait_for, wait_until
from tests.webhooks.receiver import Receiver

SETTLE = 1.0
RETRY = 2.0
MAX_FEEDS = 20
STORAGE = tempfile.mkdtemp(prefix="feed-runs-")
SHARED_STACK_ENV = {
    "GATEWAY_FEED_SETTLE_SECONDS": str(SETTLE),
    "GATEWAY_FEED_SCHEDULER_SECONDS": "0.2",
    "GATEWAY_FEED_RETRY_SECONDS": str(RETRY),
    "GATEWAY_FEED_RUN_ATTEMPTS": "2",
    "GATEWAY_CLIENT_MAX_FEEDS": str(MAX_FEEDS),
    # Runs' files go to the archive's store when no store of their own is named; with the
    # archive on, a run's task is archived too, and /csv must still serve the run's window.
    "GATEWAY_ARCHIVE_URL": f"file://{STORAGE}",
}
FIELDS = ["id", "signer_id", "created_time", "event_type"]
YEARLY = "0 0 1 1 *"  # never due while a test runs: runs start by hand unless a test says


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text)


def now() -> datetime:
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def record(record_id: str, created: datetime, **extra: Any) -> dict[str, Any]:
    return {"id": record_id, "created_time": iso(created), **extra}


class Timeline:
    """The sandbox's activity, grown as a test goes (the whole list is sent each time)."""

    def __init__(self, sandbox: httpx.Client) -> None:
        self.sandbox = sandbox
        self.records: list[dict[str, Any]] = []

    def add(self, *records: dict[str, Any], **config: Any) -> None:
        self.records.extend(records)
        patch = {"timeline": self.records, "strict_filters": True, **config}
        self.sandbox.post("/_sandbox/config", json=patch).raise_for_status()

    def expected(self, start: datetime, end: datetime) -> list[str]:
        return sorted(
            r["id"]
            for r in self.records
            if start <= parse(r["created_time"]) < end and r.get("event_type") != "displayed"
        )


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
async def api(shared_stack: Stack, sandbox: httpx.Client) -> AsyncIterator[httpx.AsyncClient]:
    async with shared_stack.client() as client:
        yield client


async def create_feed(api: httpx.AsyncClient, site_id: int, **body: Any) -> dict[str, Any]:
    payload = {
        "filter": "event_type==agreed",
        "fields": FIELDS,
        "site_id": site_id,
        "schedule": YEARLY,
        **body,
    }
    response = await api.post("/v1/feeds", json=payload)
    assert response.status_code == 201, response.text
    assert response.headers["location"] == f"/v1/feeds/{response.json()['id']}"
    feed: dict[str, Any] = response.json()
    return feed


async def run(api: httpx.AsyncClient, feed_id: str) -> dict[str, Any]:
    """Start a run by hand and wait for it to finish; the run's export."""
    response = await api.post(f"/v1/feeds/{feed_id}/runs")
    assert response.status_code == 202, response.text
    return await wait_for(api, response.json()["id"], timeout=30)


async def rows(api: httpx.AsyncClient, export_id: str) -> list[dict[str, str]]:
    response = await api.get(f"/v1/exports/{export_id}/csv")
    assert response.status_code == 200, response.text
    return list(csv.DictReader(io.StringIO(response.text)))


async def feed_of(api: httpx.AsyncClient, feed_id: str) -> dict[str, Any]:
    response = await api.get(f"/v1/feeds/{feed_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_three_runs_while_activity_arrives_hold_every_record_exactly_once(
    api: httpx.AsyncClient, sandbox: httpx.Client, shared_redis: AsyncRedis
) -> None:
    start = now() - timedelta(hours=2)
    timeline = Timeline(sandbox)
    timeline.add(
        record("before-start", start - timedelta(milliseconds=1)),
        record("on-start-1", start),
        record("on-start-2", start),
        *(record(f"old-{i}", start + timedelta(minutes=7 * i, seconds=i)) for i in range(15)),
        record("other-type", start + timedelta(minutes=3), event_type="displayed"),
    )
    feed = await create_feed(api, 7101, start_from=iso(start))
    assert feed["watermark"] == iso(start).replace(".000Z", "Z")

    exports = []
    for round_number in range(3):
        done = await run(api, feed["id"])
        assert done["status"] == "completed", done
        assert done["feed_id"] == feed["id"]
        assert done["links"] == []  # upstream's files hold rows outside the window
        exports.append(done)
        edge = parse(done["window"]["to"])
        # New activity arrives: on the edge just passed (the boundary instant, twice), in the
        # same second, and now; settle first so that "now" falls inside the next window.
        timeline.add(
            record(f"edge-{round_number}-a", edge),
            record(f"edge-{round_number}-b", edge),
            record(f"same-second-{round_number}", edge + timedelta(milliseconds=1)),
            record(f"now-{round_number}", now()),
            record(f"noise-{round_number}", now(), event_type="displayed"),
        )
        await asyncio.sleep(SETTLE + 0.2)

    windows = [(parse(e["window"]["from"]), parse(e["window"]["to"])) for e in exports]
    assert windows[0][0] == start
    assert windows[1][0] == windows[0][1] and windows[2][0] == windows[1][1]
    for _, end in windows:
        assert end <= now() - timedelta(seconds=SETTLE)

    # The archive copies each run's task (upstream's whole file); /csv still serves the window.
    first_rows = await rows(api, exports[0]["id"])

    async def first_task_archived() -> bool:
        record = json.loads(await shared_redis.get(f"gw:export:{exports[0]['id']}") or "{}")
        task = json.loads(await shared_redis.get(f"gw:task:{record.get('task_id')}") or "{}")
        return (task.get("archive") or {}).get("state") == "archived"

    await wait_until(first_task_archived, timeout=30)
    assert await rows(api, exports[0]["id"]) == first_rows

    seen: list[str] = []
    for export in exports:
        seen.extend(row["id"] for row in await rows(api, export["id"]))
    assert sorted(seen) == timeline.expected(start, windows[-1][1])  # each once, none missing
    assert "before-start" not in seen and "other-type" not in seen
    assert {"on-start-1", "on-start-2", "edge-0-a", "edge-1-b", "same-second-1"} <= set(seen)

    feed = await feed_of(api, feed["id"])
    assert parse(feed["watermark"]) == windows[-1][1]
    assert feed["last_export_id"] == exports[-1]["id"]
    listed = (await api.get(f"/v1/feeds/{feed['id']}/runs")).json()
    assert [e["id"] for e in listed["data"]] == [e["id"] for e in reversed(exports)]
    stats = sandbox.get("/_sandbox/stats").json()
    filters = [t["filter"] for t in stats["tasks"] if t["site"] == "7101"]
    assert filters[0] == f"created_time>={start.date().isoformat()} and event_type==agreed"


async def test_a_record_indexed_late_lands_in_a_later_run_within_the_settle_time(
    api: httpx.AsyncClient, sandbox: httpx.Client
) -> None:
    start = now() - timedelta(minutes=10)
    timeline = Timeline(sandbox)
    feed = await create_feed(api, 7102, start_from=iso(start))
    moment = now()
    timeline.add(
        record("on-time", moment - timedelta(minutes=5)),
        # Created just now, indexed 0.8 s later (less than the settle time): the first run's
        # window ends before it, the second run sees it.
        record("late-but-settled", moment - timedelta(seconds=0.2), late_seconds=0.8),
        # Indexed long after the settle time: its window closed before upstream listed it.
        # This is the price of freshness (see the README: freshness vs completeness).
        record("later-than-settle", moment - timedelta(minutes=2), late_seconds=3600),
    )
    first = await run(api, feed["id"])
    assert [r["id"] for r in await rows(api, first["id"])] == ["on-time"]
    await asyncio.sleep(SETTLE + 0.5)
    second = await run(api, feed["id"])
    assert [r["id"] for r in await rows(api, second["id"])] == ["late-but-settled"]


async def test_a_failed_run_keeps_the_watermark_and_its_retry_covers_the_same_window(
    api: httpx.AsyncClient, sandbox: httpx.Client, receiver: Receiver
) -> None:
    start = now() - timedelta(minutes=30)
    timeline = Timeline(sandbox)
    timeline.add(record("a", start + timedelta(minutes=1)), task_fail_rate=1.0)
    callback = f"http://127.0.0.1:{receiver.port}/retry-feed"
    feed = await create_feed(api, 7103, start_from=iso(start), callback_url=callback)
    first = await api.post(f"/v1/feeds/{feed['id']}/runs")
    failed = await wait_for(api, first.json()["id"], timeout=30)
    assert failed["status"] == "failed"
    sandbox.post("/_sandbox/config", json={"task_fail_rate": 0.0}).raise_for_status()
    during = await feed_of(api, feed["id"])
    assert during["watermark"] == feed["watermark"]  # a failed run moves nothing

    async def retried() -> bool:
        running = (await feed_of(api, feed["id"]))["running_export_id"]
        return running not in (None, failed["id"])

    await wait_until(retried, timeout=RETRY + 10)
    retry_id = (await feed_of(api, feed["id"]))["running_export_id"]
    retry = await wait_for(api, retry_id, timeout=30)
    assert retry["status"] == "completed", retry
    assert retry["window"] == failed["window"]
    assert [r["id"] for r in await rows(api, retry["id"])] == ["a"]
    assert (await feed_of(api, feed["id"]))["watermark"] == failed["window"]["to"]
    # The first attempt's failure was not the run's: no export.failed for it.
    await wait_until(lambda: receiver.requests("/retry-feed"), timeout=10)
    events = [json.loads(r.body) for r in receiver.requests("/retry-feed")]
    assert [(e["type"], e["data"]["id"]) for e in events] == [("export.completed", retry["id"])]
    assert events[0]["data"]["feed_id"] == feed["id"]


async def test_a_run_that_fails_its_retries_sends_export_failed_and_keeps_the_watermark(
    api: httpx.AsyncClient, sandbox: httpx.Client, receiver: Receiver
) -> None:
    start = now() - timedelta(minutes=30)
    Timeline(sandbox).add(record("a", start + timedelta(minutes=1)), task_fail_rate=1.0)
    callback = f"http://127.0.0.1:{receiver.port}/failing-feed"
    feed = await create_feed(api, 7104, start_from=iso(start), callback_url=callback)
    first = (await api.post(f"/v1/feeds/{feed['id']}/runs")).json()
    await wait_until(lambda: receiver.requests("/failing-feed"), timeout=RETRY + 30)
    event = json.loads(receiver.requests("/failing-feed")[0].body)
    assert event["type"] == "export.failed"
    assert event["data"]["feed_id"] == feed["id"]
    assert event["data"]["id"] != first["id"]  # the second attempt, the last one
    assert event["data"]["window"] == first["window"]
    after = await feed_of(api, feed["id"])
    assert after["watermark"] == feed["watermark"]
    assert after["running_export_id"] is None
    runs = (await api.get(f"/v1/feeds/{feed['id']}/runs")).json()["data"]
    assert [r["status"] for r in runs] == ["failed", "failed"]

    # The next run starts again from the kept watermark, covering the whole gap.
    sandbox.post("/_sandbox/config", json={"task_fail_rate": 0.0}).raise_for_status()
    done = await run(api, feed["id"])
    assert done["window"]["from"] == first["window"]["from"]
    assert [r["id"] for r in await rows(api, done["id"])] == ["a"]


async def test_a_row_whose_created_time_cannot_be_read_fails_the_run_naming_the_row(
    api: httpx.AsyncClient, sandbox: httpx.Client
) -> None:
    start = now() - timedelta(minutes=30)
    Timeline(sandbox).add(
        record("fine", start + timedelta(minutes=1)),
        {"id": "broken", "created_time": "31/12/2026 10:00"},
    )
    feed = await create_feed(api, 7105, start_from=iso(start))
    done = await run(api, feed["id"])
    assert done["status"] == "failed"
    assert done["error"]["code"] == "feed_bad_row"
    assert "'broken'" in done["error"]["message"]
    assert "'31/12/2026 10:00'" in done["error"]["message"]
    after = await feed_of(api, feed["id"])
    assert after["watermark"] == feed["watermark"] and after["running_export_id"] is None
    assert len((await api.get(f"/v1/feeds/{feed['id']}/runs")).json()["data"]) == 1  # no retry


async def test_a_run_requested_while_one_is_unfinished_answers_409(
    api: httpx.AsyncClient, sandbox: httpx.Client
) -> None:
    Timeline(sandbox).add(never_finish=True)
    feed = await create_feed(api, 7106, start_from=iso(now() - timedelta(hours=1)))
    first = await api.post(f"/v1/feeds/{feed['id']}/runs")
    assert first.status_code == 202
    second = await api.post(f"/v1/feeds/{feed['id']}/runs")
    assert second.status_code == 409
    assert second.headers["content-type"] == "application/problem+json"
    assert first.json()["id"] in second.json()["detail"]
    # Canceling the run's export ends the run; the window is run again from the watermark.
    assert (await api.delete(f"/v1/exports/{first.json()['id']}")).status_code == 200
    third = await api.post(f"/v1/feeds/{feed['id']}/runs")
    assert third.status_code == 202, third.text
    assert third.json()["window"]["from"] == first.json()["window"]["from"]


async def test_a_feed_run_shares_its_upstream_task_with_an_identical_export(
    api: httpx.AsyncClient, sandbox: httpx.Client
) -> None:
    Timeline(sandbox).add(never_finish=True)
    start = now() - timedelta(hours=1)
    feed = await create_feed(api, 7107, start_from=iso(start))
    started = (await api.post(f"/v1/feeds/{feed['id']}/runs")).json()
    same = {
        "filter": f"created_time>={start.date().isoformat()} and event_type==agreed",
        "fields": FIELDS,
        "site_id": 7107,
    }
    export = (await api.post("/v1/exports", json=same)).json()
    assert export["coalesced"] is True
    assert export["feed_id"] is None

    def upstream_tasks() -> list[dict[str, Any]]:
        stats = sandbox.get("/_sandbox/stats").json()
        return [t for t in stats["tasks"] if t["site"] == "7107"]

    await wait_until(upstream_tasks, timeout=10)
    await asyncio.sleep(0.5)  # time enough for a second task to show, were there one
    assert len(upstream_tasks()) == 1
    assert started["filter"] == same["filter"]


async def test_another_clients_feed_answers_404_on_every_route(api: httpx.AsyncClient) -> None:
    feed = await create_feed(api, 7108, paused=True)
    path = f"/v1/feeds/{feed['id']}"
    async with httpx.AsyncClient(base_url=str(api.base_url)) as raw:
        bob = {"Authorization": f"Bearer {KEYS['bob']}"}
        answers = [
            await raw.get(path, headers=bob),
            await raw.patch(path, json={"paused": False}, headers=bob),
            await raw.delete(path, headers=bob),
            await raw.post(f"{path}/runs", headers=bob),
            await raw.get(f"{path}/runs", headers=bob),
        ]
        listed = (await raw.get("/v1/feeds", headers=bob)).json()
    assert [a.status_code for a in answers] == [404] * 5
    assert all(a.headers["content-type"] == "application/problem+json" for a in answers)
    assert feed["id"] not in [f["id"] for f in listed["data"]]
    unchanged = await feed_of(api, feed["id"])
    assert unchanged["paused"] is True and unchanged["running_export_id"] is None


@pytest.mark.parametrize(
    ("body", "member"),
    [
        ({"schedule": "* * * * * *"}, "schedule"),
        ({"schedule": "*/30 * * * * *"}, "schedule"),
        ({"schedule": "0 0 31 2 *"}, "schedule"),
        ({"start_from": "2999-01-01T00:00:00Z"}, "start_from"),
        ({"start_from": "last tuesday"}, "start_from"),
        ({"filter": "event_type=="}, "filter"),
    ],
)
async def test_a_bad_feed_answers_422_naming_the_member_and_creates_nothing(
    api: httpx.AsyncClient, body: dict[str, Any], member: str
) -> None:
    before = (await api.get("/v1/feeds", params={"limit": 100})).json()["data"]
    answer = await api.post("/v1/feeds", json={"schedule": YEARLY, "site_id": 7109, **body})
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert member in [e["member"] for e in answer.json()["errors"]]
    assert (await api.get("/v1/feeds", params={"limit": 100})).json()["data"] == before


async def test_a_patch_of_the_query_answers_422_and_of_the_schedule_applies(
    api: httpx.AsyncClient,
) -> None:
    feed = await create_feed(api, 7110)
    for member, value in (("filter", "event_type==updated"), ("fields", ["id"])):
        answer = await api.patch(f"/v1/feeds/{feed['id']}", json={member: value})
        assert answer.status_code == 422
        assert [e["member"] for e in answer.json()["errors"]] == [member]
    changed = await api.patch(
        f"/v1/feeds/{feed['id']}", json={"schedule": "30 4 * * *", "metadata": {"k": 1}}
    )
    assert changed.status_code == 200
    assert changed.json()["schedule"] == "30 4 * * *"
    assert parse(changed.json()["next_run_at"]).strftime("%H:%M") == "04:30"
    paused = await api.patch(f"/v1/feeds/{feed['id']}", json={"paused": True})
    assert paused.json()["next_run_at"] is None
    assert (await feed_of(api, feed["id"]))["filter"] == "event_type==agreed"


async def test_more_feeds_than_the_client_limit_answers_409(shared_stack: Stack) -> None:
    async with shared_stack.client("bob") as bob:
        created = [
            await bob.post("/v1/feeds", json={"schedule": YEARLY, "paused": True})
            for _ in range(MAX_FEEDS)
        ]
        assert {c.status_code for c in created} == {201}
        over = await bob.post("/v1/feeds", json={"schedule": YEARLY})
        assert over.status_code == 409
        assert over.json()["max_feeds"] == MAX_FEEDS
        first = created[0].json()["id"]
        assert (await bob.delete(f"/v1/feeds/{first}")).status_code == 204
        assert (await bob.get(f"/v1/feeds/{first}")).status_code == 404
        again = await bob.post("/v1/feeds", json={"schedule": YEARLY, "paused": True})
        assert again.status_code == 201


# -- the scheduler, in this process with a clock of its own --------------------------------


@pytest.fixture
async def runtimes(shared_stack: Stack, upstream_url: str) -> AsyncIterator[list[Runtime]]:
    """Two workers' worth of services on the shared stack's Redis (its worker runs the
    upstream steps), each with its own connections."""
    settings = Settings(
        redis_url=shared_stack.redis_url,
        upstream_base_url=upstream_url,
        upstream_token=SecretStr(SANDBOX_TOKEN),
        feed_settle_seconds=SETTLE,
        archive_url=f"file://{STORAGE}",
        webhook_allowed_networks=["127.0.0.1/32"],
    )
    built: list[Runtime] = []
    queues: list[ArqJobQueue] = []
    for _ in range(2):
        queue = ArqJobQueue(await create_pool(redis_settings(settings)))
        queues.append(queue)
        built.append(build_runtime(settings, queue))
    yield built
    for runtime, queue in zip(built, queues, strict=True):
        await runtime.close()
        await queue.close()


class FastClock:
    """Time that runs ``speed`` times faster than the wall clock, from now."""

    def __init__(self, speed: float) -> None:
        self.origin = now()
        self.loop = asyncio.get_running_loop()
        self.started = self.loop.time()
        self.speed = speed

    def __call__(self) -> datetime:
        return self.origin + timedelta(seconds=(self.loop.time() - self.started) * self.speed)


async def test_a_feed_scheduled_every_minute_runs_by_itself(
    api: httpx.AsyncClient, sandbox: httpx.Client, runtimes: list[Runtime]
) -> None:
    start = now() - timedelta(hours=1)
    Timeline(sandbox).add(record("x", start + timedelta(minutes=1)))
    feed = await create_feed(api, 7111, start_from=iso(start), schedule="* * * * *")
    clock = FastClock(speed=60)  # a minute a second
    scheduler = FeedScheduler(runtimes[0].feeds, clock=clock)
    started: list[str] = []
    for _ in range(200):  # at most ~20 s of wall time, ~20 minutes of the scheduler's
        for export_id in await scheduler.tick():  # (other tests' feeds may be due too)
            export = (await api.get(f"/v1/exports/{export_id}")).json()
            if export["feed_id"] == feed["id"]:
                started.append(export_id)
        if len(started) >= 2:
            break
        await asyncio.sleep(0.1)
    assert len(started) >= 2, started
    first = await wait_for(api, started[0], timeout=30)
    second = await wait_for(api, started[1], timeout=30)
    assert first["status"] == second["status"] == "completed"
    assert second["window"]["from"] == first["window"]["to"]  # the second waited for the first
    assert [r["id"] for r in await rows(api, first["id"])] == ["x"]
    at = parse(first["created_at"])
    assert parse(first["window"]["to"]) <= at + timedelta(minutes=2)  # by the fast clock
    after = await feed_of(api, feed["id"])
    assert parse(after["next_run_at"]).second == 0


async def test_two_workers_never_start_the_same_run_twice(
    api: httpx.AsyncClient, sandbox: httpx.Client, runtimes: list[Runtime]
) -> None:
    Timeline(sandbox).add(never_finish=True)
    # Yearly, and the schedulers' clock at its firing: the workers' own scheduler (on the real
    # clock) stays out of it, so every claim below is one of these twenty concurrent ticks.
    feed = await create_feed(api, 7112, start_from=iso(now() - timedelta(hours=1)))
    due = parse(feed["next_run_at"]) + timedelta(seconds=1)
    schedulers = [FeedScheduler(r.feeds, clock=lambda: due) for r in runtimes]
    ticks = await asyncio.gather(*(s.tick() for s in schedulers for _ in range(10)))
    runs = (await api.get(f"/v1/feeds/{feed['id']}/runs")).json()["data"]
    assert len(runs) == 1
    started = [e for tick in ticks for e in tick if e == runs[0]["id"]]
    assert started == [runs[0]["id"]]  # claimed by exactly one of the ticks, once
    assert (await feed_of(api, feed["id"]))["running_export_id"] == started[0]


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(GATEWAY_URL=stack.api_url, GATEWAY_API_KEY=KEYS["alice"])
    script = str(Path(sys.executable).parent / "export-gateway")
    return subprocess.run(
        [script, "feeds", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def test_the_cli_creates_lists_runs_pauses_and_resumes_feeds(
    shared_stack: Stack, sandbox: httpx.Client
) -> None:
    Timeline(sandbox).add(never_finish=True)
    start = iso(now() - timedelta(hours=1))
    created = _cli(
        shared_stack, "create", "--schedule", "0 3 * * *", "--filter", "event_type==agreed",
        "--fields", "id,event_type", "--site-id", "7113", "--start-from", start, "--paused",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    feed = json.loads(created.stdout)
    assert feed["paused"] is True and feed["schedule"] == "0 3 * * *"
    listed = _cli(shared_stack, "list", "--limit", "100")
    assert feed["id"] in [f["id"] for f in json.loads(listed.stdout)["data"]]
    resumed = _cli(shared_stack, "resume", feed["id"])
    assert json.loads(resumed.stdout)["paused"] is False
    assert json.loads(resumed.stdout)["next_run_at"].endswith("T03:00:00Z")
    paused = _cli(shared_stack, "pause", feed["id"])
    assert json.loads(paused.stdout)["paused"] is True
    ran = _cli(shared_stack, "run", feed["id"])
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["feed_id"] == feed["id"]
    again = _cli(shared_stack, "run", feed["id"])
    assert again.returncode == 1 and "HTTP 409" in again.stderr
    bad = _cli(shared_stack, "create", "--schedule", "every day")
    assert bad.returncode == 1 and "schedule" in bad.stderr


async def test_a_run_claimed_but_never_submitted_is_submitted_by_a_later_tick_under_its_id(
    api: httpx.AsyncClient, sandbox: httpx.Client, runtimes: list[Runtime]
) -> None:
    start = now() - timedelta(hours=1)
    Timeline(sandbox).add(record("y", start + timedelta(minutes=2)))
    feed = await create_feed(api, 7114, start_from=iso(start))
    claimed_at = now() - timedelta(minutes=2)
    window = Window(start=start, end=claimed_at - timedelta(seconds=SETTLE))
    lost = RunState(export_id="exp_" + "L" * 22, window=window, started_at=claimed_at)

    def crash_after_claim(current: FeedRecord) -> FeedRecord:
        return current.model_copy(update={"run": lost})

    feeds = runtimes[0].feeds
    await feeds.store.update(feed["id"], crash_after_claim)  # the claim, and nothing after it
    assert await FeedScheduler(feeds).tick() == []  # it only moves the lost run on
    done = await wait_for(api, lost.export_id, timeout=30)
    assert done["status"] == "completed" and done["feed_id"] == feed["id"]
    assert [r["id"] for r in await rows(api, lost.export_id)] == ["y"]
    assert (await feed_of(api, feed["id"]))["watermark"] == done["window"]["to"]


async def test_a_paused_feed_catches_up_in_one_run_covering_the_whole_gap(
    api: httpx.AsyncClient, sandbox: httpx.Client, runtimes: list[Runtime]
) -> None:
    start = now() - timedelta(hours=3)
    timeline = Timeline(sandbox)
    timeline.add(*(record(f"gap-{i}", start + timedelta(minutes=20 * i)) for i in range(9)))
    # A yearly schedule, with the scheduler's clock moved past its firing: the workers' own
    # scheduler (on the real clock) cannot start this feed's run while the test runs.
    feed = await create_feed(api, 7115, start_from=iso(start), schedule=YEARLY, paused=True)
    later = datetime(now().year + 1, 1, 2, tzinfo=UTC)  # the firing was missed while paused
    runs_path = f"/v1/feeds/{feed['id']}/runs"
    # (A tick starts every due feed: other tests' feeds of this module may start too.)
    await FeedScheduler(runtimes[0].feeds, clock=lambda: later).tick()
    assert (await api.get(runs_path)).json()["data"] == []  # paused: no run
    resumed = (await api.patch(f"/v1/feeds/{feed['id']}", json={"paused": False})).json()
    due = parse(resumed["next_run_at"]) + timedelta(seconds=1)
    started = await FeedScheduler(runtimes[0].feeds, clock=lambda: due).tick()
    runs = (await api.get(runs_path)).json()["data"]
    assert len(runs) == 1 and runs[0]["id"] in started  # one run, started by this tick
    done = await wait_for(api, runs[0]["id"], timeout=30)
    assert done["window"]["from"] == feed["watermark"]
    assert parse(done["window"]["to"]) == due - timedelta(seconds=SETTLE)
    ids = sorted(r["id"] for r in await rows(api, done["id"]))
    assert ids == timeline.expected(start, parse(done["window"]["to"]))
    assert len(ids) == 9
