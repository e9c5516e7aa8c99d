"""API keys, both configured forms, and tenant isolation."""

from __future__ import annotations

from tests.support import Stack


async def test_a_request_without_a_key_is_401_problem_json(stack: Stack) -> None:
    async with stack.client("nobody") as api:
        response = await api.post("/v1/exports", json={})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    problem = response.json()
    assert problem["status"] == 401 and problem["title"] and problem["type"]


async def test_a_wrong_key_is_401(stack: Stack) -> None:
    async with stack.client("nobody") as api:
        response = await api.get(
            "/v1/exports/exp_AAAAAAAAAAAAAAAAAAAAAA", headers={"Authorization": "Bearer nope"}
        )
    assert response.status_code == 401


async def test_plain_and_sha256_keys_both_authenticate(stack: Stack) -> None:
    async with stack.client("alice") as alice, stack.client("bob") as bob:
        assert (await alice.post("/v1/exports", json={})).status_code == 202
        assert (await bob.post("/v1/exports", json={})).status_code == 202


async def test_another_clients_export_is_404_like_a_missing_one(stack: Stack) -> None:
    async with stack.client("alice") as alice, stack.client("bob") as bob:
        created = (await alice.post("/v1/exports", json={"filter": "event_type==agreed"})).json()
        theirs = await bob.get(f"/v1/exports/{created['id']}")
        missing = await bob.get("/v1/exports/exp_AAAAAAAAAAAAAAAAAAAAAA")
        mine = await alice.get(f"/v1/exports/{created['id']}")
    assert mine.status_code == 200
    assert theirs.status_code == missing.status_code == 404
    assert theirs.headers["content-type"] == "application/problem+json"
    assert theirs.json()["title"] == missing.json()["title"]


async def test_a_bad_key_answers_401_before_the_body_is_validated(stack: Stack) -> None:
    async with stack.client("nobody") as api:
        wrong_body = await api.post("/v1/exports", json={"filter": 7, "surprise": True})
        not_json = await api.post(
            "/v1/exports", content=b'{"filter": ', headers={"Content-Type": "application/json"}
        )
    assert wrong_body.status_code == 401
    assert not_json.status_code == 401  # the key is checked before the body is even read
