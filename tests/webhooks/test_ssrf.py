"""The SSRF guard: submission-time URL checks and the delivery-time guarded transport.

Only loopback is ever connected to. Forbidden addresses such as 10.0.0.1 are refused before any
connection; host names are answered by test resolvers (faking DNS only), except ``localhost``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from app.webhooks.ssrf import (
    CallbackAddressRefused,
    CallbackPolicy,
    CallbackRefused,
    GuardedTransport,
    Resolver,
    check_callback_url,
    guarded_client,
)

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"
NO_ALLOWANCE = CallbackPolicy()
LOOPBACK_ALLOWED = CallbackPolicy.from_setting("127.0.0.1/32")
EVERYTHING_ALLOWED = CallbackPolicy.from_setting("0.0.0.0/0,::/0")


def dns(**names: list[str]) -> Resolver:
    """A resolver answering only the given names (dots written as '_'); others do not resolve."""

    async def resolve(host: str, port: int, /) -> list[str]:
        answers = names.get(host.replace(".", "_").replace("-", "_"))
        if answers is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers

    return resolve


async def no_lookup(host: str, port: int, /) -> list[str]:
    raise AssertionError(f"unexpected DNS lookup of {host!r}")


# (url, resolver or None for the system one, allowance that permits it)
FORBIDDEN = [
    pytest.param("http://127.0.0.1/hook", no_lookup, "127.0.0.1", id="loopback"),
    pytest.param("http://localhost/hook", None, "127.0.0.0/8,::1", id="localhost"),
    pytest.param("http://[::1]/hook", no_lookup, "::1", id="ipv6-loopback"),
    pytest.param("http://[::ffff:127.0.0.1]/hook", no_lookup, "127.0.0.1", id="ipv4-mapped"),
    pytest.param("http://[::ffff:7f00:1]/", no_lookup, "::ffff:127.0.0.1", id="mapped-allowance"),
    pytest.param("http://[::127.0.0.1]/", no_lookup, "127.0.0.1", id="ipv4-compatible"),
    pytest.param("http://[64:ff9b::7f00:1]/", no_lookup, "127.0.0.1", id="nat64"),
    pytest.param("http://[2002:a00:1::1]/", no_lookup, "10.0.0.1", id="6to4-private"),
    pytest.param("http://[2001::1]/", no_lookup, "2001::/32", id="teredo"),
    pytest.param("http://10.0.0.1/", no_lookup, "10.0.0.0/8", id="private-10"),
    pytest.param("http://172.16.0.1/", no_lookup, "172.16.0.0/12", id="private-172"),
    pytest.param("http://192.168.1.1/", no_lookup, "192.168.0.0/16", id="private-192"),
    pytest.param("http://[fd12::1]/", no_lookup, "fc00::/7", id="unique-local"),
    pytest.param("http://100.64.0.1/", no_lookup, "100.64.0.0/10", id="cgnat"),
    pytest.param("http://[fe80::1]/", no_lookup, "fe80::/10", id="ipv6-link-local"),
    pytest.param("http://169.254.1.1/", no_lookup, "169.254.0.0/16", id="link-local"),
    pytest.param("http://0.0.0.0/", no_lookup, "0.0.0.0", id="unspecified"),
    pytest.param("http://[::]/", no_lookup, "::", id="ipv6-unspecified"),
    pytest.param("http://224.0.0.1/", no_lookup, "224.0.0.0/4", id="multicast"),
    pytest.param("http://[ff02::1]/", no_lookup, "ff00::/8", id="ipv6-multicast"),
    pytest.param("http://255.255.255.255/", no_lookup, "255.255.255.255", id="broadcast"),
    pytest.param("http://240.0.0.1/", no_lookup, "240.0.0.0/4", id="reserved"),
    pytest.param("http://192.0.2.1/", no_lookup, "192.0.2.0/24", id="documentation"),
    pytest.param("http://[2001:db8::1]/", no_lookup, "2001:db8::/32", id="ipv6-documentation"),
    pytest.param("http://198.18.0.1/", no_lookup, "198.18.0.0/15", id="benchmark"),
    pytest.param("http://192.0.0.8/", no_lookup, "192.0.0.0/24", id="ietf-protocol"),
    pytest.param(
        "https://loopback.test/hook", dns(loopback_test=["127.0.0.1"]), "127.0.0.1", id="dns-name"
    ),
]

METADATA = [
    pytest.param("http://169.254.169.254/latest/meta-data/", no_lookup, id="imds"),
    pytest.param("http://[fd00:ec2::254]/", no_lookup, id="imds-ipv6"),
    pytest.param("http://100.100.100.200/", no_lookup, id="alibaba"),
    pytest.param("http://169.254.170.2/v2/credentials", no_lookup, id="ecs"),
    pytest.param("http://[::ffff:169.254.169.254]/", no_lookup, id="imds-mapped"),
    pytest.param("http://[64:ff9b::a9fe:a9fe]/", no_lookup, id="imds-nat64"),
    pytest.param(
        "http://metadata.google.internal/",
        dns(metadata_google_internal=["169.254.169.254"]),
        id="imds-by-name",
    ),
]


@pytest.mark.parametrize(("url", "resolver", "allowance"), FORBIDDEN)
async def test_forbidden_address_is_refused_without_allowance(
    url: str, resolver: Resolver | None, allowance: str
) -> None:
    with pytest.raises(CallbackRefused, match="which callbacks may not reach"):
        await check_callback_url(url, NO_ALLOWANCE, *([resolver] if resolver else []))


@pytest.mark.parametrize(("url", "resolver", "allowance"), FORBIDDEN)
async def test_forbidden_address_is_accepted_inside_an_allowed_network(
    url: str, resolver: Resolver | None, allowance: str
) -> None:
    policy = CallbackPolicy.from_setting(allowance)
    await check_callback_url(url, policy, *([resolver] if resolver else []))


@pytest.mark.parametrize(("url", "resolver"), METADATA)
async def test_metadata_address_is_refused_even_when_allowed(url: str, resolver: Resolver) -> None:
    with pytest.raises(CallbackRefused, match="cloud metadata address"):
        await check_callback_url(url, EVERYTHING_ALLOWED, resolver)


@pytest.mark.parametrize(
    "host",
    ["2130706433", "0x7f.1", "017700000001", "0x7f000001", "127.1", "0177.0.0.1", "127.0.0.1."],
)
async def test_numeric_host_tricks_are_refused_outright(host: str) -> None:
    with pytest.raises(CallbackRefused, match=r"numeric|IPv4 address"):
        await check_callback_url(f"http://{host}/hook", EVERYTHING_ALLOWED, no_lookup)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/hook", "scheme 'ftp'"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("javascript:alert(1)", "scheme 'javascript'"),
        ("/relative/hook", "absolute"),
        ("http:///hook", "no host"),
        ("https://user:pass@example.com/hook", "user information"),
        ("https://user@example.com/hook", "user information"),
        ("https://@example.com/hook", "user information"),
        ("http://example.com\\@127.0.0.1/", "user information"),
        ("https://example.com:0/", "port 0"),
        ("https://example.com:70000/", "port 70000"),
        ("http://exa mple.com/", "not a valid DNS name"),
        ("http://[fe80::1%25eth0]/", "zone"),
        ("https://example.com/" + "a" * 2030, "longer than 2048"),
    ],
)
async def test_malformed_url_is_refused(url: str, reason: str) -> None:
    with pytest.raises(CallbackRefused, match=reason):
        await check_callback_url(url, EVERYTHING_ALLOWED, dns(example_com=[PUBLIC_V4]))


async def test_url_of_exactly_2048_characters_is_accepted() -> None:
    url = "https://example.com/" + "a" * (2048 - len("https://example.com/"))
    await check_callback_url(url, NO_ALLOWANCE, dns(example_com=[PUBLIC_V4]))


@pytest.mark.parametrize("answers", [[PUBLIC_V4], [PUBLIC_V6], [PUBLIC_V4, PUBLIC_V6]])
async def test_name_resolving_to_public_addresses_is_accepted(answers: list[str]) -> None:
    resolver = dns(hooks_example_com=answers)
    await check_callback_url("https://hooks.example.com:8443/x?y=1", NO_ALLOWANCE, resolver)


@pytest.mark.parametrize("url", [f"http://{PUBLIC_V4}/hook", "https://[2606:4700::1111]/"])
async def test_public_ip_literal_is_accepted_without_lookup(url: str) -> None:
    await check_callback_url(url, NO_ALLOWANCE, no_lookup)


async def test_name_with_any_forbidden_answer_is_refused() -> None:
    resolver = dns(mixed_example_com=[PUBLIC_V4, "10.0.0.1"])
    with pytest.raises(CallbackRefused, match="resolves to a private address"):
        await check_callback_url("https://mixed.example.com/", NO_ALLOWANCE, resolver)


async def test_unresolvable_name_is_refused_at_submission() -> None:
    with pytest.raises(CallbackRefused, match="does not resolve"):
        await check_callback_url("https://nowhere.example.com/", NO_ALLOWANCE, dns())
    with pytest.raises(CallbackRefused, match="does not resolve"):
        await check_callback_url("https://empty.test/", NO_ALLOWANCE, dns(empty_test=[]))


async def test_slow_resolution_is_refused_at_submission() -> None:
    async def slow(host: str, port: int, /) -> list[str]:
        await asyncio.sleep(10)
        return [PUBLIC_V4]

    with pytest.raises(CallbackRefused, match="does not resolve"):
        await check_callback_url("https://slow.test/", NO_ALLOWANCE, slow, lookup_timeout=0.05)


async def test_refusal_names_neither_the_resolved_address_nor_the_path() -> None:
    resolver = dns(db_corp_test=["10.1.2.3"])
    with pytest.raises(CallbackRefused) as refused:
        await check_callback_url("https://db.corp.test/x?token=s3cret", NO_ALLOWANCE, resolver)
    assert refused.value.reason == (
        "host 'db.corp.test' resolves to a private address, which callbacks may not reach"
    )


def test_policy_parses_the_setting() -> None:
    policy = CallbackPolicy.from_setting(" 10.0.0.0/8, 127.0.0.1 ,,::1,::ffff:192.168.0.0/112")
    assert [str(n) for n in policy.allowed_networks] == [
        "10.0.0.0/8",
        "127.0.0.1/32",
        "::1/128",
        "192.168.0.0/16",
    ]
    assert CallbackPolicy.from_setting(None) == CallbackPolicy.from_setting("") == NO_ALLOWANCE


@pytest.mark.parametrize("entry", ["nope", "10.0.0.1/8", "10.0.0.0/33"])
def test_policy_rejects_a_bad_entry_by_name(entry: str) -> None:
    with pytest.raises(ValueError, match=f"'{entry}'"):
        CallbackPolicy.from_setting(f"127.0.0.1/32,{entry}")


# --- delivery time: a real HTTP server on 127.0.0.1 ------------------------------------------


@dataclass
class Received:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    port: int = 0
    connections: int = 0
    requests: list[Received] = field(default_factory=list)
    server_names: list[str | None] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, target, _ = head[0].split(" ", 2)
            headers = dict(line.split(":", 1) for line in head[1:] if line)
            headers = {name.strip().lower(): value.strip() for name, value in headers.items()}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Received(method, target, headers, body))
            extra = ""
            status = "200 OK"
            if target == "/redirect":
                status, extra = "302 Found", f"Location: http://10.0.0.1:{self.port}/hook\r\n"
            head_out = f"HTTP/1.1 {status}\r\n{extra}Content-Length: 2\r\nConnection: close\r\n"
            writer.write(head_out.encode() + b"\r\nok")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def serve(ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    state = Server()
    server = await asyncio.start_server(state.handle, "127.0.0.1", 0, ssl=ssl_context)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with serve() as state:
        yield state


LOCALHOST = dns(localhost=["127.0.0.1"])


async def test_delivery_reaches_an_allowed_address_with_the_original_host(server: Server) -> None:
    transport = GuardedTransport(LOOPBACK_ALLOWED, LOCALHOST)
    async with httpx.AsyncClient(
        transport=transport, follow_redirects=False, trust_env=False
    ) as client:
        response = await client.post(f"http://localhost:{server.port}/hook", json={"a": 1})
    assert response.status_code == 200
    [received] = server.requests
    assert (received.method, received.target) == ("POST", "/hook")
    assert received.headers["host"] == f"localhost:{server.port}"
    assert received.body == b'{"a":1}'


async def test_delivery_refuses_before_connecting_without_allowance(server: Server) -> None:
    async with guarded_client(NO_ALLOWANCE, LOCALHOST) as client:
        with pytest.raises(CallbackAddressRefused, match="loopback") as refused:
            await client.post(f"http://localhost:{server.port}/hook?token=s3cret", json={})
    assert isinstance(refused.value, httpx.ConnectError)
    assert "s3cret" not in str(refused.value)
    assert refused.value.request.url.path == "/hook"
    assert server.connections == 0


async def test_dns_rebinding_between_submission_and_delivery_is_refused(server: Server) -> None:
    answers = [[PUBLIC_V4], ["127.0.0.1"]]
    calls: list[str] = []

    async def rebinding(host: str, port: int, /) -> list[str]:
        calls.append(host)
        return answers[min(len(calls), len(answers)) - 1]

    url = f"http://rebind.test:{server.port}/hook"
    await check_callback_url(url, NO_ALLOWANCE, rebinding)
    async with guarded_client(NO_ALLOWANCE, rebinding) as client:
        with pytest.raises(CallbackAddressRefused, match=r"'rebind\.test' resolves to a loopback"):
            await client.post(url, json={})
    assert calls == ["rebind.test", "rebind.test"]
    assert server.connections == 0


async def test_delivery_refuses_when_any_answer_is_forbidden(server: Server) -> None:
    resolver = dns(localhost=["127.0.0.1", "10.0.0.1"])
    async with guarded_client(LOOPBACK_ALLOWED, resolver) as client:
        with pytest.raises(CallbackAddressRefused, match="private address"):
            await client.post(f"http://localhost:{server.port}/hook", json={})
    assert server.connections == 0


async def test_delivery_refuses_numeric_host_tricks(server: Server) -> None:
    async with guarded_client(EVERYTHING_ALLOWED, no_lookup) as client:
        with pytest.raises(CallbackAddressRefused, match="non-canonical"):
            await client.post(f"http://2130706433:{server.port}/hook", json={})
    assert server.connections == 0


async def test_unresolvable_name_at_delivery_is_an_ordinary_connect_error() -> None:
    async with guarded_client(NO_ALLOWANCE, dns()) as client:
        with pytest.raises(httpx.ConnectError, match="does not resolve") as failed:
            await client.post("http://gone.test/hook", json={})
    assert not isinstance(failed.value, CallbackAddressRefused)


async def test_redirect_to_a_forbidden_address_is_not_followed(server: Server) -> None:
    async with guarded_client(LOOPBACK_ALLOWED, LOCALHOST) as client:
        response = await client.post(f"http://localhost:{server.port}/redirect", json={})
        assert response.status_code == 302
        assert response.headers["location"].startswith("http://10.0.0.1:")
        # Even a client that follows redirects cannot reach the target: that hop is refused.
        with pytest.raises(CallbackAddressRefused, match=r"'10\.0\.0\.1' is a private address"):
            await client.post(
                f"http://localhost:{server.port}/redirect", json={}, follow_redirects=True
            )
    assert [r.target for r in server.requests] == ["/redirect", "/redirect"]
    assert server.connections == 2


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    cert, key = directory / "cert.pem", directory / "key.pem"
    done = subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-days", "1", "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)),
        ],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"openssl cannot make a test certificate: {done.stderr.decode()[-200:]}")
    return cert, key


async def test_tls_uses_the_host_name_for_sni_and_verification(tmp_path: Path) -> None:
    cert, key = _self_signed_certificate(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    resolver = dns(localhost=["127.0.0.1"], other_test=["127.0.0.1"])
    async with serve(server_context) as state:
        server_context.sni_callback = lambda _sock, name, _ctx: state.server_names.append(name)
        async with guarded_client(LOOPBACK_ALLOWED, resolver, verify=client_context) as client:
            response = await client.post(f"https://localhost:{state.port}/hook", json={})
            assert response.status_code == 200
            # The certificate names only "localhost": verification is against the URL's host,
            # not the vetted IP actually connected to, so another name for it fails.
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.post(f"https://other.test:{state.port}/hook", json={})
    assert state.server_names[0] == "localhost"
    assert state.requests[0].headers["host"] == f"localhost:{state.port}"
    assert len(state.requests) == 1
