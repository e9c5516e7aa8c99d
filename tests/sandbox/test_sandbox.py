"""End-to-end tests of the sandbox upstream, over real HTTP against a uvicorn server in a thread,
plus unit tests of its pure parts (filter reader, sliding window, active-task tracker, config)."""

from __future__ import annotations

import csv
import io
import math
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from app.sandbox.__main__ import build_config, parse_args
from app.sandbox.config import DEFAULT_SITE_FIELDS, SandboxConfig, merge_patch
from app.sandbox.data import RecordSource, format_ms
from app.sandbox.filters import parse_filter
from app.sandbox.state import ActiveTracker, SandboxState, SlidingWindow
from app.sandbox.testing import RunningSandbox, run_sandbox

TOKEN = "test-token"
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
HEX24 = re.compile(r"^[0-9a-f]{24}$")
FIELDS = "id,signer_id,created_time,connection_data.remote_address,connection_data.page_title"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[RunningSandbox]:
    with run_sandbox(SandboxConfig(token=TOKEN, task_seconds=0.3, seed=7)) as running:
        yield running


@pytest.fixture
def client(sandbox: RunningSandbox) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sandbox.base_url, headers=sandbox.auth_headers) as http:
        http.post(f"{sandbox.url}/_sandbox/reset").raise_for_status()
        yield http


def configure(sandbox: RunningSandbox, **patch: Any) -> dict[str, Any]:
    response = httpx.post(f"{sandbox.url}/_sandbox/config", json=patch)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def stats(sandbox: RunningSandbox) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(f"{sandbox.url}/_sandbox/stats").json()
    return result


def create(client: httpx.Client, **params: str) -> dict[str, Any]:
    response = client.post("/tasks/export/activity", params=params)
    assert response.status_code == 200, response.text
    task: dict[str, Any] = response.json()["data"]
    return task


def wait_finished(client: httpx.Client, task_id: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/tasks/export/{task_id}").json()
        # A bare task has a "data" member of its own: tell the envelope by the task's "id".
        task: dict[str, Any] = body if "id" in body else body["data"]
        if not task["active"] or time.monotonic() > deadline:
            return task
        time.sleep(0.05)


def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


# --- authorisation ---------------------------------------------------------------------------
def test_bearer_token_is_checked(sandbox: RunningSandbox, client: httpx.Client) -> None:
    bare = httpx.get(f"{sandbox.base_url}/activity")
    assert bare.status_code == 401
    assert bare.json()["status"] == 401
    wrong = httpx.get(f"{sandbox.base_url}/activity", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert client.get("/activity").status_code == 200
    assert client.get("/sites/403/exportFields").status_code == 403
    forbidden = client.post("/tasks/export/activity", params={"site": "403"})
    assert forbidden.status_code == 403
    assert stats(sandbox)["tasks_created"] == 0


# --- export lifecycle and CSV files ----------------------------------------------------------
def test_export_goes_pending_running_complete(
    sandbox: RunningSandbox, client: httpx.Client
) -> None:
    configure(sandbox, task_seconds=0.6)  # pending for 0.15 s, then running until 0.6 s
    task = create(client, filter="event_type==agreed", fields=FIELDS, no_count="true", lean="true")
    assert task["status"] == "pending"
    assert task["active"] is True
    assert HEX24.match(task["id"])
    assert task["job_name"] == "GenerateExportCSV"
    assert (task["source"], task["retry_count"], task["site"]) == ("api", 0, 5193)
    assert "links" not in task
    time.sleep(0.25)
    assert client.get(f"/tasks/export/{task['id']}").json()["data"]["status"] == "running"
    done = wait_finished(client, task["id"])
    assert done["status"] == "complete"
    assert done["active"] is False
    assert len(done["links"]) == 3
    assert all(link.startswith("http://127.0.0.1:") for link in done["links"])
    assert ISO_MS.match(done["completed_at"])
    assert client.get("/tasks/export/000000000000000000000000").status_code == 404


def test_csv_files_follow_the_request(client: httpx.Client) -> None:
    task = create(client, filter="created_time>=2021-03-04 and event_type==sent", fields=FIELDS)
    links = wait_finished(client, task["id"])["links"]
    files = [httpx.get(link) for link in links]
    assert all(f.status_code == 200 for f in files)
    assert all(f.headers["content-type"].startswith("text/csv") for f in files)
    tables = [read_csv(f.text) for f in files]
    assert all(table[0] == FIELDS.split(",") for table in tables)
    rows = [row for table in tables for row in table[1:]]
    assert [len(table) - 1 for table in tables] == [100, 100, 50]
    assert len({row[0] for row in rows}) == 250
    times = [row[2] for row in rows]
    assert times == sorted(times)
    assert times[0] >= "2021-03-04"
    assert all(ISO_MS.match(t) for t in times)
    assert all("@" in row[1] for row in rows)
    assert [httpx.get(link).content for link in links] == [f.content for f in files]


def test_event_type_and_default_columns(client: httpx.Client) -> None:
    task = create(client, filter="event_type==disagreed")
    link = wait_finished(client, task["id"])["links"][0]
    table = read_csv(httpx.get(link).text)
    assert table[0][:3] == ["id", "signer_id", "created_time"]
    column = table[0].index("event_type")
    assert {row[column] for row in table[1:]} == {"disagreed"}


def test_rejections_create_no_task(sandbox: RunningSandbox, client: httpx.Client) -> None:
    unknown = client.post("/tasks/export/activity", params={"fields": "id,nope.field"})
    assert unknown.status_code == 400
    assert "nope.field" in unknown.json()["message"]
    rejected = client.post("/tasks/export/activity", params={"filter": "id==1 and __reject__"})
    assert rejected.status_code == 400
    assert stats(sandbox)["tasks_created"] == 0


def test_custom_site_fields(sandbox: RunningSandbox, client: httpx.Client) -> None:
    configure(sandbox, sites={"77": ["id", "signer_id", "created_time", "custom_data.tier"]})
    assert client.get("/sites/77/exportFields").json() == {
        "data": ["id", "signer_id", "created_time", "custom_data.tier"]
    }
    assert client.post("/tasks/export/activity", params={"site": "77"}).status_code == 400
    task = create(client, site="77", fields="id,signer_id,created_time,custom_data.tier")
    assert task["site"] == 77
    rows = read_csv(httpx.get(wait_finished(client, task["id"])["links"][0]).text)
    assert rows[1][3].startswith("tier-")


def test_shape_knobs(sandbox: RunningSandbox, client: httpx.Client) -> None:
    configure(
        sandbox,
        envelope=False,
        links_shape="download_url",
        complete_status="Completed",
        completion_time_field="finishedAt",
    )
    created = client.post("/tasks/export/activity").json()
    assert created["status"] == "pending"
    done = wait_finished(client, created["id"])
    assert done["status"] == "Completed"
    assert ISO_MS.match(done["finishedAt"])
    assert "completed_at" not in done
    assert all(set(item) == {"download_url"} for item in done["links"])
    configure(sandbox, envelope=True, links_shape="href", completion_time_field=None)
    again = client.get(f"/tasks/export/{created['id']}").json()["data"]
    assert [item["href"] for item in again["links"]] == [i["download_url"] for i in done["links"]]
    assert "finishedAt" not in again


def test_csv_format_knobs(sandbox: RunningSandbox, client: httpx.Client) -> None:
    configure(sandbox, rows=3, csv_bom=True, csv_trailing_newline=False, csv_crlf=True)
    link = wait_finished(client, create(client, fields="id,signer_id")["id"])["links"][0]
    body = httpx.get(link).content
    assert body.startswith(b"\xef\xbb\xbfid,signer_id\r\n")
    assert body.count(b"\r\n") == 3
    assert not body.endswith(b"\n")
    unsigned = link.split("?")[0]
    assert httpx.get(unsigned).status_code == 403
    assert httpx.get(unsigned.replace("/1.csv", "/2.csv")).status_code == 403
    assert httpx.get(link.replace("/1.csv", "/9.csv")).status_code in (403, 404)
    configure(sandbox, signed_links=False)
    assert httpx.get(unsigned).status_code == 200
    assert httpx.get(unsigned.replace("/1.csv", "/2.csv")).status_code == 404


def test_tricky_values_are_quoted(sandbox: RunningSandbox, client: httpx.Client) -> None:
    configure(sandbox, rows=60, csv_tricky_values=True)
    columns = "id,signer_id,created_time,connection_data.page_title,custom_data.notes"
    link = wait_finished(client, create(client, fields=columns)["id"])["links"][0]
    text = httpx.get(link).text
    table = read_csv(text)
    assert len(table) == 61
    assert all(len(row) == 5 for row in table)
    assert any("\n" in row[3] or "\n" in row[4] for row in table[1:])


def test_files_expire_after_retention(sandbox: RunningSandbox, client: httpx.Client) -> None:
    configure(sandbox, retention_seconds=0.3)
    link = wait_finished(client, create(client)["id"])["links"][0]
    assert httpx.get(link).status_code == 200
    time.sleep(0.35)
    assert httpx.get(link).status_code == 404


def test_large_csv_streams(sandbox: RunningSandbox, client: httpx.Client) -> None:
    configure(sandbox, rows=200_000, rows_per_file=200_000, task_seconds=0.05)
    links = wait_finished(client, create(client, fields="id,signer_id,created_time")["id"])
    assert len(links["links"]) == 1
    lines = 0
    with httpx.stream("GET", links["links"][0], timeout=60) as response:
        assert response.status_code == 200
        assert "content-length" not in response.headers
        for _line in response.iter_lines():
            lines += 1
    assert lines == 200_001


# --- activity listing and export fields --------------------------------------------------------
def test_activity_paging(client: httpx.Client) -> None:
    pages = [client.get("/activity", params={"page": n, "per_page": 100}).json() for n in (1, 2, 3)]
    assert [p["has_more"] for p in pages] == [True, True, False]
    assert [p["count"] for p in pages] == [100, 100, 37]
    assert {p["total_count"] for p in pages} == {237}
    records = [record for page in pages for record in page["data"]]
    assert len({record["id"] for record in records}) == 237
    first = records[0]
    assert isinstance(first["connection_data"], dict)
    assert isinstance(first["custom_data"], dict)
    assert isinstance(first["contract"], int)
    assert ISO_MS.match(first["created_time"])
    default = client.get("/activity").json()
    assert (default["page"], default["per_page"], len(default["data"])) == (1, 25, 25)
    assert default["data"] == records[:25]
    assert client.get("/activity", params={"per_page": 101}).status_code == 400
    assert client.get("/activity", params={"page": "x"}).status_code == 400
    lean = client.get("/activity", params={"no_count": "true", "page": 10}).json()
    assert "total_count" not in lean
    assert lean["has_more"] is False
    assert lean["count"] == 12


def test_activity_filter_and_sort(client: httpx.Client) -> None:
    agreed = client.get("/activity", params={"filter": "event_type==agreed", "per_page": 100})
    body = agreed.json()
    assert 0 < body["total_count"] < 237
    assert {record["event_type"] for record in body["data"]} == {"agreed"}
    newest = client.get("/activity", params={"sort": "-created_time"}).json()["data"]
    times = [record["created_time"] for record in newest]
    assert times == sorted(times, reverse=True)
    since = client.get("/activity", params={"filter": "created_time>=2020-07-25"}).json()
    assert all(r["created_time"] >= "2020-07-25" for r in since["data"])


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ("data_strings", {"data": ["id", "signer_id"]}),
        ("bare_strings", ["id", "signer_id"]),
        ("data_objects", {"data": [{"name": "id"}, {"name": "signer_id"}]}),
    ],
)
def test_export_fields_shapes(
    sandbox: RunningSandbox, client: httpx.Client, shape: str, expected: Any
) -> None:
    configure(sandbox, fields_shape=shape, sites={"9": ["id", "signer_id"]})
    assert client.get("/sites/9/exportFields").json() == expected
    default = client.get("/sites/123/exportFields").json()
    names = default["data"] if isinstance(default, dict) else default
    assert len(names) == len(DEFAULT_SITE_FIELDS)


# --- faults ------------------------------------------------------------------------------------
def test_429_carries_retry_after_and_creates_nothing(
    sandbox: RunningSandbox, client: httpx.Client
) -> None:
    configure(sandbox, fail_rate_429=1.0, retry_after_seconds=2)
    response = client.post("/tasks/export/activity")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    configure(sandbox, retry_after_http_date=True)
    dated = client.get("/activity")
    assert dated.status_code == 429
    assert dated.headers["retry-after"].endswith("GMT")
    observed = stats(sandbox)
    assert observed["tasks_created"] == 0
    assert observed["requests"]["POST /v1.1/tasks/export/activity"] == {"429": 1}
    assert observed["faults_injected"]["429"] == 2


def test_503_500_and_malformed(sandbox: RunningSandbox, client: httpx.Client) -> None:
    configure(sandbox, fail_rate_503=1.0)
    unavailable = client.post("/tasks/export/activity")
    assert unavailable.status_code == 503
    assert unavailable.headers["retry-after"] == "1"
    configure(sandbox, fail_rate_503=0.0, fail_rate_500=1.0)
    assert client.get("/sites/1/exportFields").status_code == 500
    configure(sandbox, fail_rate_500=0.0, malformed_rate=1.0)
    malformed = client.post("/tasks/export/activity")
    assert malformed.status_code == 200
    assert malformed.headers["content-type"] == "application/json"
    with pytest.raises(ValueError, match=r"\w"):
        malformed.json()
    assert stats(sandbox)["tasks_created"] == 0


def test_seeded_faults_repeat(sandbox: RunningSandbox, client: httpx.Client) -> None:
    def run() -> list[int]:
        configure(sandbox, fail_rate_429=0.5, seed=1234)
        return [client.get("/activity").status_code for _ in range(30)]

    first = run()
    client.post(f"{sandbox.url}/_sandbox/reset")
    assert run() == first
    assert set(first) == {200, 429}


def test_task_fail_rate(client: httpx.Client, sandbox: RunningSandbox) -> None:
    configure(sandbox, task_fail_rate=1.0)
    done = wait_finished(client, create(client)["id"])
    assert done["status"] == "failed"
    assert done["active"] is False
    assert "links" not in done
    configure(sandbox, task_fail_rate=0.0, failed_status="ERROR")
    assert client.get(f"/tasks/export/{done['id']}").json()["data"]["status"] == "ERROR"
    marked = wait_finished(client, create(client, filter="__fail__")["id"])
    assert marked["status"] == "ERROR"


def test_never_finish(sandbox: RunningSandbox, client: httpx.Client) -> None:
    marked = create(client, filter="event_type==agreed and __never__")
    configure(sandbox, never_finish=True)
    flagged = create(client)
    time.sleep(0.4)
    for task in (marked, flagged):
        current = client.get(f"/tasks/export/{task['id']}").json()["data"]
        assert current["status"] == "running"
        assert current["active"] is True
    assert stats(sandbox)["active_tasks_now"] == 2


def test_slow_answers(sandbox: RunningSandbox, client: httpx.Client) -> None:
    configure(sandbox, slow_rate=1.0, slow_seconds=0.3)
    started = time.monotonic()
    assert client.get("/activity").status_code == 200
    assert time.monotonic() - started >= 0.3
    assert stats(sandbox)["faults_injected"] == {"slow": 1}


def test_csv_stream_aborts_mid_download(sandbox: RunningSandbox, client: httpx.Client) -> None:
    configure(sandbox, rows=5_000, rows_per_file=5_000, csv_fault_after_bytes=10_000)
    link = wait_finished(client, create(client)["id"])["links"][0]
    received = bytearray()

    def download() -> None:
        with httpx.stream("GET", link) as response:
            assert response.status_code == 200
            for chunk in response.iter_bytes():
                received.extend(chunk)

    with pytest.raises(httpx.TransportError):
        download()
    assert 0 < len(received) <= 10_000


def test_limits_answer_429(sandbox: RunningSandbox, client: httpx.Client) -> None:
    configure(sandbox, max_active_tasks_limit=2, task_seconds=30)
    create(client)
    create(client)
    limited = client.post("/tasks/export/activity")
    assert limited.status_code == 429
    assert "retry-after" in limited.headers
    configure(sandbox, rate_limit_per_second=3)
    codes = [client.get("/activity").status_code for _ in range(8)]
    assert 429 in codes
    assert stats(sandbox)["tasks_created"] == 2


# --- observation and control ---------------------------------------------------------------------
def test_stats_track_tasks_and_rates(sandbox: RunningSandbox, client: httpx.Client) -> None:
    configure(sandbox, task_seconds=1.0)
    ids = [create(client, filter=f"contract=={n}", fields="id,signer_id")["id"] for n in range(3)]
    observed = stats(sandbox)
    assert observed["tasks_created"] == 3
    assert [t["id"] for t in observed["tasks"]] == ids
    assert observed["tasks"][1]["filter"] == "contract==1"
    assert observed["tasks"][1]["fields"] == "id,signer_id"
    assert observed["tasks"][1]["site"] is None
    assert observed["tasks"][1]["effective_site"] == 5193
    assert observed["active_tasks_now"] == 3
    assert observed["max_active_tasks"] == 3
    assert 1 <= observed["max_requests_in_any_1s_window"] <= 3
    wait_finished(client, ids[-1])
    create(client)
    later = stats(sandbox)
    assert later["active_tasks_now"] == 1
    assert later["max_active_tasks"] == 3
    assert later["tasks"][2]["polls"] >= 1
    httpx.get(f"{sandbox.url}/_sandbox/config")
    assert "GET /_sandbox/config" not in later["requests"]


def test_config_patch_and_reset(sandbox: RunningSandbox, client: httpx.Client) -> None:
    assert configure(sandbox, rows=7)["rows"] == 7
    bad = httpx.post(f"{sandbox.url}/_sandbox/config", json={"no_such_knob": 1})
    assert bad.status_code == 422
    assert httpx.post(f"{sandbox.url}/_sandbox/config", json={"rows": -1}).status_code == 422
    assert httpx.get(f"{sandbox.url}/_sandbox/config").json()["rows"] == 7
    reset = httpx.post(f"{sandbox.url}/_sandbox/reset").json()
    assert reset["config"]["rows"] == 250
    assert reset["config"]["token"] == TOKEN


# --- pure parts ----------------------------------------------------------------------------------
def test_sliding_window_is_not_bucketed() -> None:
    window = SlidingWindow()
    for moment in (0.1, 0.95, 1.05, 1.5, 1.9, 2.2):
        window.add(moment)
    # 0.95, 1.05, 1.5, 1.9 lie within one second although they span two fixed buckets.
    assert window.max_count == 4


def test_active_tracker_counts_overlaps() -> None:
    tracker = ActiveTracker()
    tracker.add(0.0, 3.0)
    tracker.add(1.0, 2.0)
    tracker.add(2.0, 5.0)
    tracker.add(2.5, math.inf)
    assert tracker.count(2.5) == 3
    assert tracker.count(10.0) == 1
    assert tracker.max_count == 3


def test_task_durations_spread_by_id() -> None:
    now = [100.0]
    state = SandboxState(
        SandboxConfig(task_seconds=1.0, task_seconds_max=5.0), clock=lambda: now[0]
    )
    tasks = [
        state.create_task(site=1, columns=["id"], flt=parse_filter(""), query={}) for _ in range(20)
    ]
    durations = [task.duration for task in tasks]
    assert all(1.0 <= d <= 5.0 for d in durations)
    assert len(set(durations)) == 20
    assert state.stats()["max_active_tasks"] == 20
    now[0] += 5.0
    assert state.active_now() == 0
    assert {state.phase(task) for task in tasks} == {"complete"}


def test_filter_reader() -> None:
    flt = parse_filter("created_time>=2020-10-10 and event_type==agreed AND custom_data.vip=='1'")
    assert flt.forced == {"event_type": "agreed", "custom_data.vip": "1"}
    assert flt.time_from == datetime(2020, 10, 10, tzinfo=UTC)
    assert flt.matches({"created_time": "2020-10-11T00:00:00.000Z", "event_type": "agreed",
                        "custom_data.vip": "1"})  # fmt: skip
    assert not flt.matches({"created_time": "2020-10-09T00:00:00.000Z", "event_type": "agreed"})
    assert parse_filter("garbage ((").clauses == ()
    assert parse_filter("x __never__").never


def test_records_are_deterministic() -> None:
    one = RecordSource("abc", site=1, account=2, count=10)
    two = RecordSource("abc", site=1, account=2, count=10)
    assert one.record(3) == two.record(3)
    assert one.record(3) != one.record(4)
    assert format_ms(1_595_345_670_051) == "2020-07-21T15:34:30.051Z"


def test_config_from_env_and_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    config = SandboxConfig.from_env(
        {
            "SANDBOX_TOKEN": "123",
            "SANDBOX_TASK_SECONDS": "0.5",
            "SANDBOX_ROWS": "10",
            "SANDBOX_FORBIDDEN_SITES": "[1, 2]",
            "SANDBOX_COMPLETE_STATUS": "done",
            "SANDBOX_COMPLETION_TIME_FIELD": "finished",
            "SANDBOX_PUBLIC_BASE_URL": "",
        }
    )
    assert (config.token, config.task_seconds, config.rows) == ("123", 0.5, 10)
    assert config.forbidden_sites == {1, 2}
    assert (config.complete_status, config.completion_time_field) == ("done", "finished")
    assert config.public_base_url is None
    monkeypatch.setenv("SANDBOX_ROWS", "11")
    args = parse_args(["--task-seconds", "0.2", "--config-json", '{"csv_bom": true}'])
    built = build_config(args)
    assert (built.rows, built.task_seconds, built.csv_bom) == (11, 0.2, True)
    patched = merge_patch(SandboxConfig(sites={1: ["id"]}), {"sites": {"2": ["id"], "1": None}})
    assert patched.sites == {2: ["id"]}
