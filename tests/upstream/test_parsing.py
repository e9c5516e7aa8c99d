"""Defensive parsing of upstream tasks and field lists (upstream's answers vary)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from app.upstream.errors import UpstreamBadResponse
from app.upstream.parsing import parse_field_names, parse_task

VENDOR_EXAMPLE: dict[str, Any] = {
    "data": {
        "status": "pending", "source": "api", "retry_count": 0, "active": True,
        "job_name": "GenerateExportCSV", "created_by": 9785, "account": 2785, "site": 5193,
        "data": {"exportName": "action", "exportType": "Action", "sendTo": "someone@example.com"},
        "id": "5f88abf5f4689d7295cf1134",
    }
}  # fmt: skip


def test_the_vendors_example_is_a_running_task() -> None:
    task = parse_task(VENDOR_EXAMPLE)
    assert (task.id, task.state, task.raw_status, task.links) == (
        "5f88abf5f4689d7295cf1134", "running", "pending", ()
    )  # fmt: skip


def test_a_bare_task_reads_like_an_enveloped_one() -> None:
    assert parse_task(VENDOR_EXAMPLE["data"]) == parse_task(VENDOR_EXAMPLE)


@pytest.mark.parametrize(
    "word", ["complete", "Completed", "SUCCESS", "succeeded", "done", "Finished"]
)
def test_success_words_complete_case_insensitively(word: str) -> None:
    task = parse_task({"id": "t", "status": word})
    assert task.state == "completed" and task.raw_status == word


@pytest.mark.parametrize("word", ["failed", "FAILURE", "error", "Errored", "canceled", "cancelled"])
def test_failure_words_fail(word: str) -> None:
    assert parse_task({"id": "t", "status": word}).state == "failed"


def test_inactive_without_links_is_a_failure_and_with_links_a_success() -> None:
    assert parse_task({"id": "t", "status": "weird", "active": False}).state == "failed"
    assert parse_task({"id": "t", "active": False, "links": ["https://x/1.csv"]}).state == (
        "completed"
    )


def test_an_unknown_status_word_is_still_running_and_kept_verbatim() -> None:
    task = parse_task({"id": "t", "status": "Queued-For-Processing"})
    assert task.state == "running" and task.raw_status == "Queued-For-Processing"


@pytest.mark.parametrize("key", ["url", "link", "href", "download_url"])
def test_links_as_objects_under_each_known_key(key: str) -> None:
    task = parse_task(
        {
            "id": "t",
            "status": "pending",
            "links": [{key: "https://x/1.csv"}, {key: "https://x/2.csv"}],
        }
    )
    assert task.state == "completed"
    assert task.links == ("https://x/1.csv", "https://x/2.csv")


def test_links_as_strings_and_a_single_string() -> None:
    assert parse_task({"id": "t", "links": ["https://x/1.csv"]}).links == ("https://x/1.csv",)
    assert parse_task({"id": "t", "links": "https://x/1.csv"}).links == ("https://x/1.csv",)


def test_links_that_are_not_http_urls_are_ignored() -> None:
    task = parse_task(
        {
            "id": "t",
            "status": "complete",
            "links": ["javascript:alert(1)", {"url": 3}, None, "https://x/ok.csv"],
        }
    )
    assert task.links == ("https://x/ok.csv",)


@pytest.mark.parametrize(
    ("key", "value"),
    [("completed_at", "2020-07-21T15:34:30.051Z"), ("finished_at", "2020-07-21T15:34:30.051+00:00"),
     ("completedAt", 1595345670051), ("completed_time", 1595345670.051)],
)  # fmt: skip
def test_upstream_completion_time_in_any_plausible_form(key: str, value: object) -> None:
    task = parse_task({"id": "t", "status": "complete", key: value})
    assert task.completed_at == datetime(2020, 7, 21, 15, 34, 30, 51000, tzinfo=UTC)


@pytest.mark.parametrize("payload", [None, [], "text", {"status": "complete"}, {"data": {}}])
def test_a_task_without_an_id_is_a_bad_response(payload: object) -> None:
    with pytest.raises(UpstreamBadResponse):
        parse_task(payload)


@pytest.mark.parametrize(
    "payload",
    [{"data": ["a", "b"]}, ["a", "b"], {"data": [{"name": "a"}, {"key": "b"}]},
     [{"field": "a"}, {"path": "b"}, {"other": "c"}, 7]],
)  # fmt: skip
def test_export_fields_in_each_shape(payload: object) -> None:
    assert parse_field_names(payload) == ["a", "b"]
