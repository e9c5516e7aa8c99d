"""Properties of the input limits, against the real stack: any metadata within the documented
limits (a JSON object, at most 4 KiB and 5 levels deep, valid Unicode) is accepted and can be
read back, listed, coalesced with and delivered to; anything outside them is a 4xx problem and
queues nothing. Example counts are modest (the examples go through real processes)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support import KEYS, Stack
from tests.webhooks.receiver import Receiver

MAX_BYTES = 4096
MAX_DEPTH = 5


def depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def size(value: object) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=24,
)
objects = st.dictionaries(st.text(max_size=12), json_values, max_size=6)
within = objects.filter(lambda m: depth(m) <= MAX_DEPTH and size(m) <= MAX_BYTES)


def _nest(value: dict[str, Any], levels: int) -> dict[str, Any]:
    for _ in range(levels):
        value = {"k": value}
    return value


outside = st.one_of(
    # too deep: 6 to 40 levels
    st.builds(_nest, objects, st.integers(min_value=MAX_DEPTH, max_value=40)).filter(
        lambda m: depth(m) > MAX_DEPTH and size(m) < 60_000
    ),
    # too large
    st.builds(lambda m, pad: {**m, "pad": "x" * pad}, objects, st.integers(4097, 20_000)),
    # not an object
    st.one_of(scalars, st.lists(scalars, max_size=3)),
)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(shared_stack: Stack) -> Stack:
    """The module's stack (``SHARED_STACK_ENV``), on a freshly flushed database."""
    return shared_stack


def client(stack: Stack, who: str) -> httpx.Client:
    return httpx.Client(
        base_url=stack.api_url, headers={"Authorization": f"Bearer {KEYS[who]}"}, timeout=10
    )


def test_metadata_within_the_limits_is_read_listed_coalesced_and_delivered(
    gateway: Stack, receiver: Receiver, sandbox: httpx.Client
) -> None:
    sandbox.post("/_sandbox/config", json={"task_seconds": 1}).raise_for_status()
    expected: dict[str, Any] = {}  # receiver path -> the metadata its webhook must carry
    hook = f"http://127.0.0.1:{receiver.port}"

    with client(gateway, "alice") as alice, client(gateway, "bob") as bob:

        @settings(
            max_examples=30,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(first=within, second=within)
        def accepted(first: dict[str, Any], second: dict[str, Any]) -> None:
            query = f"batch=={uuid.uuid4().hex[:8]}"
            n = len(expected)
            made = alice.post(
                "/v1/exports",
                json={"filter": query, "metadata": first, "callback_url": f"{hook}/p/a{n}"},
            )
            assert made.status_code == 202, made.text
            export = made.json()
            assert export["metadata"] == first
            assert alice.get(f"/v1/exports/{export['id']}").json()["metadata"] == first
            newest = alice.get("/v1/exports", params={"limit": 1}).json()["data"]
            assert [e["id"] for e in newest] == [export["id"]]
            assert newest[0]["metadata"] == first
            joined = bob.post(
                "/v1/exports",
                json={"filter": query, "metadata": second, "callback_url": f"{hook}/p/b{n}"},
            )
            assert joined.status_code == 202, joined.text
            assert joined.json()["coalesced"] is True
            assert joined.json()["metadata"] == second
            expected[f"/p/a{n}"] = first
            expected[f"/p/b{n}"] = second

        accepted()

    deadline = time.monotonic() + 90
    missing = list(expected)
    while missing and time.monotonic() < deadline:
        missing = [path for path in expected if not receiver.requests(path)]
        time.sleep(0.5)
    assert not missing, f"{len(missing)} of {len(expected)} webhooks never came"
    for path, metadata in expected.items():
        payload = json.loads(receiver.requests(path)[0].body)
        assert payload["type"] == "export.completed"
        assert payload["data"]["metadata"] == metadata


def test_metadata_outside_the_limits_is_a_4xx_problem_and_queues_nothing(
    gateway: Stack,
) -> None:
    with client(gateway, "alice") as api:
        before = api.get("/v1/exports", params={"limit": 1}).json()["data"]

        @settings(
            max_examples=40,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )
        @given(metadata=outside)
        def refused(metadata: object) -> None:
            response = api.post("/v1/exports", json={"metadata": metadata})
            assert 400 <= response.status_code < 500, response.text[:300]
            assert response.headers["content-type"] == "application/problem+json"
            members = [e["member"] for e in response.json().get("errors") or []]
            assert any(m == "metadata" or m.startswith("metadata") for m in members), members

        refused()
        after = api.get("/v1/exports", params={"limit": 1}).json()["data"]
    assert after == before
