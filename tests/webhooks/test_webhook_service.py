"""The webhook service in this process, against the suite's real Redis and a real receiver on
loopback; the test plays the worker by calling ``deliver`` the way the ``deliver_event`` job does.
Host names are answered by test resolvers (faking DNS only), so a name can point at loopback
without touching the machine's resolver, and no traffic leaves the machine."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from standardwebhooks import Webhook

from app.config import Settings
from app.exports.schemas import Export, ExportRecord, ExportRequest
from app.platform.errors import InvalidRequest
from app.platform.queue import ArqJobQueue
from app.webhooks.schemas import Event
from app.webhooks.service import WebhookService, parse_delivery_subject
from app.webhooks.signing import WebhookSigner
from app.webhooks.ssrf import CallbackPolicy, Resolver, guarded_client
from app.webhooks.store import WebhookStore
from app.wiring.runtime import Runtime, build_runtime
from tests.support import WEBHOOK_SECRET, api_keys_setting, wait_until
from tests.webhooks.receiver import Answer, Receiver

NAME = "hooks.example.test"
PUBLIC = "93.184.216.34"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def settings(redis_url: str, upstream_url: str, **more: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "upstream_base_url": upstream_url,
        "upstream_token": "sandbox-test-token",
        "api_keys": api_keys_setting(),
        "webhook_secret": WEBHOOK_SECRET,
        "webhook_allowed_networks": "127.0.0.1/32",
        "webhook_retry_schedule": "0.3,0.6,1",
        **more,
    }
    return Settings(_env_file=None, **values)


@pytest.fixture
async def runtime(redis_url: str, upstream_url: str) -> AsyncIterator[Runtime]:
    config = settings(redis_url, upstream_url)
    queue = await ArqJobQueue.connect(config)
    built = build_runtime(config, queue)
    yield built
    await built.close()
    await queue.close()


def dns(answers: dict[str, list[list[str]]]) -> Resolver:
    """A resolver giving each name its answers in turn (the last one repeats)."""

    async def resolve(host: str, port: int, /) -> list[str]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        queue = answers[host]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return resolve


def service(
    runtime: Runtime, resolver: Resolver, allowed: str = "", timeout: float = 15.0
) -> WebhookService:
    policy = CallbackPolicy.from_setting(allowed)
    return WebhookService(
        store=WebhookStore(runtime.redis, record_ttl=3600),
        exports=runtime.store,
        queue=runtime.webhooks.queue,
        signer=WebhookSigner.from_settings(runtime.settings.webhook_secret, []),
        policy=policy,
        client=guarded_client(policy, resolver),
        retry_schedule=[0.3, 0.6, 1.0],
        resolver=resolver,
        timeout=timeout,
    )


async def completed_export(runtime: Runtime, callback_url: str) -> tuple[ExportRecord, Export]:
    """A stored export of alice's (as submitted), shown completed, with ``callback_url``."""
    shown = await runtime.exports.submit("alice", ExportRequest(filter="event_type==agreed"))
    record = await runtime.store.get_export(shown.id)
    assert record is not None
    task = await runtime.store.get_task(record.task_id)
    assert task is not None
    record = record.model_copy(update={"callback_url": callback_url})
    done = task.model_copy(update={"status": "completed", "links": ["http://127.0.0.1:1024/1.csv"]})
    return record, Export.of(record, done)


async def published(webhooks: WebhookService, record: ExportRecord, export: Export) -> Event:
    await webhooks.publish(record, export, "export.completed")
    [event] = await webhooks.store.events_of(record.id)
    return event


async def test_a_name_resolving_to_loopback_is_refused_without_allowance_and_delivered_with_it(
    runtime: Runtime, receiver: Receiver
) -> None:
    resolver = dns({NAME: [["127.0.0.1"]]})
    url = f"http://{NAME}:{receiver.port}/named"
    with pytest.raises(InvalidRequest) as refused:
        await service(runtime, resolver).check_callback("alice", url)
    assert refused.value.errors[0].member == "callback_url"
    assert "resolves to a loopback address" in refused.value.errors[0].detail
    assert "127.0.0.1" not in refused.value.detail  # no internal DNS answers in errors

    webhooks = service(runtime, resolver, allowed="127.0.0.1/32")
    await webhooks.check_callback("alice", url)
    record, export = await completed_export(runtime, url)
    event = await published(webhooks, record, export)
    await webhooks.deliver(event.id, 0, 1)
    [request] = receiver.requests("/named")
    assert request.headers["host"] == f"{NAME}:{receiver.port}"
    assert Webhook(WEBHOOK_SECRET).verify(request.body, request.headers)["data"]["id"] == record.id
    found = await webhooks.deliveries("alice", record.id)
    assert [a.outcome for a in found.data] == ["delivered"]
    await webhooks.client.aclose()


async def test_a_forbidden_address_at_delivery_time_gives_up_at_once(
    runtime: Runtime, receiver: Receiver
) -> None:
    # DNS rebinding: public at submission, loopback at delivery. Nothing is ever connected to.
    resolver = dns({NAME: [[PUBLIC], ["127.0.0.1"]]})
    webhooks = service(runtime, resolver)
    url = f"http://{NAME}:{receiver.port}/rebound"
    await webhooks.check_callback("alice", url)
    dead_before = REGISTRY.get_sample_value("gateway_webhook_dead_letters_total") or 0.0
    record, export = await completed_export(runtime, url)
    event = await published(webhooks, record, export)
    await webhooks.deliver(event.id, 0, 1)
    assert receiver.requests("/rebound") == []
    found = await webhooks.deliveries("alice", record.id)
    [attempt] = found.data
    assert attempt.status_code is None and attempt.outcome == "gave_up"
    assert attempt.error == (
        f"callback refused: host {NAME!r} resolves to a loopback address, "
        "which callbacks may not reach"
    )
    assert found.events[0].dead_lettered and found.events[0].state == "gave_up"
    assert REGISTRY.get_sample_value("gateway_webhook_dead_letters_total") == dead_before + 1
    await webhooks.deliver(event.id, 0, 2)  # a stray job does nothing now
    assert len((await webhooks.deliveries("alice", record.id)).data) == 1
    await webhooks.client.aclose()


async def test_429_with_retry_after_waits_at_least_that_long(
    runtime: Runtime, receiver: Receiver
) -> None:
    receiver.script("/busy", Answer(429, "slow down", {"retry-after": "30"}))
    webhooks = runtime.webhooks
    record, export = await completed_export(runtime, f"http://127.0.0.1:{receiver.port}/busy")
    event = await published(webhooks, record, export)
    await webhooks.deliver(event.id, 0, 1)
    after = await webhooks.store.get_event(event.id)
    [attempt] = (await webhooks.deliveries("alice", record.id)).data
    assert after is not None and after.next_attempt_at is not None
    assert attempt.status_code == 429 and attempt.outcome == "failed"
    wait = (after.next_attempt_at - attempt.at).total_seconds()
    assert wait >= 30  # not the schedule's 0.3 s
    assert after.next_job_key == f"deliver:{event.id}:0:2"
    assert await webhooks.queue.is_scheduled(after.next_job_key)


async def test_a_worker_dying_mid_attempt_leads_to_the_attempt_being_made_again(
    runtime: Runtime, receiver: Receiver
) -> None:
    receiver.script("/slow", Answer(200, "late", delay=30), Answer(200, "ok"))
    webhooks = runtime.webhooks
    record, export = await completed_export(runtime, f"http://127.0.0.1:{receiver.port}/slow")
    event = await published(webhooks, record, export)
    doomed = asyncio.create_task(webhooks.deliver(event.id, 0, 1))
    await wait_until(lambda: receiver.requests("/slow"), timeout=20, interval=0.05)
    doomed.cancel()  # the worker dies mid-attempt: nothing after the POST runs
    with pytest.raises(asyncio.CancelledError):
        await doomed
    assert (await webhooks.deliveries("alice", record.id)).data == []
    # arq runs the job again (same key, same argument): the attempt is made again.
    await webhooks.deliver(*parse_delivery_subject(f"{event.id}:0:1"))
    first, again = receiver.requests("/slow")
    assert again.headers["webhook-id"] == first.headers["webhook-id"] == event.id
    [attempt] = (await webhooks.deliveries("alice", record.id)).data
    assert (attempt.attempt, attempt.outcome) == (1, "delivered")
    await webhooks.deliver(event.id, 0, 1)  # and a third run of the job does nothing
    assert len(receiver.requests("/slow")) == 2


async def test_a_receiver_slower_than_the_timeout_is_a_failed_attempt(
    runtime: Runtime, receiver: Receiver
) -> None:
    receiver.script("/sleepy", Answer(200, "too late", delay=3))
    webhooks = service(runtime, dns({}), allowed="127.0.0.1/32", timeout=0.5)
    record, export = await completed_export(runtime, f"http://127.0.0.1:{receiver.port}/sleepy")
    event = await published(webhooks, record, export)
    await webhooks.deliver(event.id, 0, 1)
    [attempt] = (await webhooks.deliveries("alice", record.id)).data
    assert attempt.status_code is None and attempt.outcome == "failed"
    assert attempt.error is not None and attempt.error.startswith("timed out after 0.5 s")
    assert attempt.duration_ms < 3000
    await webhooks.client.aclose()


async def test_a_client_without_a_webhook_secret_cannot_name_a_callback(
    redis_url: str, upstream_url: str, redis_client: Redis
) -> None:
    config = settings(
        redis_url, upstream_url, webhook_secret=None, webhook_secrets=f"alice:{WEBHOOK_SECRET}"
    )
    queue = await ArqJobQueue.connect(config)
    built = build_runtime(config, queue)
    try:
        request = ExportRequest(callback_url="http://127.0.0.1:1024/hook")
        await built.exports.submit("alice", request)
        with pytest.raises(InvalidRequest) as refused:
            await built.exports.submit("bob", request)
        bob_without = await built.exports.submit("bob", ExportRequest(filter="event_type==x"))
    finally:
        await built.close()
        await queue.close()
    [problem] = refused.value.errors
    assert (problem.member, problem.detail) == (
        "callback_url",
        "no webhook secret configured for this client",
    )
    assert bob_without.callback_url is None
    assert len(await redis_client.keys("gw:export:exp_*")) == 2


async def test_repair_reschedules_an_overdue_delivery_whose_job_was_lost(
    runtime: Runtime, receiver: Receiver, redis_client: Redis
) -> None:
    webhooks = runtime.webhooks
    record, export = await completed_export(runtime, f"http://127.0.0.1:{receiver.port}/lost")
    event = await published(webhooks, record, export)
    key = f"deliver:{event.id}:0:1"
    assert await webhooks.queue.is_scheduled(key)
    await redis_client.delete(f"arq:job:{key}")  # the queue lost it
    await redis_client.zrem("arq:queue", key)
    assert not await webhooks.queue.is_scheduled(key)
    assert await webhooks.repair(grace_seconds=0) == 1
    assert await webhooks.queue.is_scheduled(key)
    assert await webhooks.repair(grace_seconds=0) == 0


async def test_redeliver_during_an_attempt_sends_again_once_that_attempt_ends(
    runtime: Runtime, receiver: Receiver
) -> None:
    receiver.script("/busy-line", Answer(500, "", delay=1), Answer(200, "ok"))
    webhooks = runtime.webhooks
    record, export = await completed_export(runtime, f"http://127.0.0.1:{receiver.port}/busy-line")
    event = await published(webhooks, record, export)
    first = asyncio.create_task(webhooks.deliver(event.id, 0, 1))
    await wait_until(lambda: receiver.requests("/busy-line"), timeout=20, interval=0.05)
    view = await webhooks.redeliver("alice", record.id)
    assert view.state == "pending"
    await first
    after = await webhooks.store.get_event(event.id)
    assert after is not None and after.next_job_key == f"deliver:{event.id}:1:2"
    await webhooks.deliver(event.id, 0, 2)  # the first round's retry is stale now
    await webhooks.deliver(event.id, 1, 2)
    attempts = (await webhooks.deliveries("alice", record.id)).data
    assert [(a.attempt, a.status_code, a.outcome) for a in attempts] == [
        (1, 500, "failed"),
        (2, 200, "delivered"),
    ]
    assert len({r.headers["webhook-id"] for r in receiver.requests("/busy-line")}) == 1
