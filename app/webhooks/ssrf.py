"""SSRF guard for webhook callback URLs.

Threat model
------------
An API client names a ``callback_url`` and the gateway later POSTs to it from inside our own
network. Without a guard, that turns the gateway into a proxy a client can aim at anything the
gateway can reach but the client cannot: loopback services (Redis, the worker's admin ports),
private networks, link-local neighbours and, worst of all, the cloud metadata service, which hands
out instance credentials. A client does not even need to read the response to do harm: a POST to an
internal endpoint is an action, and error messages and timings leak what is there.

So a callback may only reach *public* unicast addresses, plus the private networks the operator
lists in ``GATEWAY_WEBHOOK_ALLOWED_NETWORKS`` (``CallbackPolicy``). Cloud metadata addresses are
refused even inside an allowed network.

Why two checks
--------------
1. ``check_callback_url`` runs at submission, so a bad URL is answered at once (422) with a reason,
   instead of failing silently at every retry for hours. It checks the syntax and every address
   the name resolves to *now*.
2. ``GuardedTransport`` runs at delivery, on the address actually connected to. The first check
   alone is not enough: DNS answers change (a TTL-0 name can answer a public address at submission
   and 127.0.0.1 a second later -- "DNS rebinding"), the operator may narrow the allowed networks
   in between, and a record may predate the guard. The transport resolves the name once, vets every
   answer, and connects to a vetted IP itself, so there is no second lookup for an attacker to
   race. The request keeps the original URL, so the ``Host`` header, TLS SNI and certificate
   verification still use the name the client gave (httpcore passes the URL's host, not the IP we
   connect to, as ``server_hostname`` to ``start_tls``).

Decisions
---------
* Unresolvable names are refused at submission ("does not resolve"): such a webhook could never
  be delivered. At delivery a lookup failure is an ordinary, retryable ``httpx.ConnectError``.
* If *any* answer is forbidden the URL is refused, even if another answer is fine: we cannot know
  which one a later connection would use.
* Non-canonical numeric hosts (``2130706433``, ``0x7f.1``, ``017700000001``, ``127.1``,
  ``127.0.0.1.``) are refused outright instead of being normalised like ``inet_aton`` would: no
  honest client needs them, and refusing avoids parser differentials. Any host whose last label is
  numeric counts, as in the WHATWG URL standard. IPv6 zone identifiers are refused too.
* IPv6 forms that embed an IPv4 address -- mapped ``::ffff:a.b.c.d``, compatible ``::a.b.c.d``,
  NAT64 ``64:ff9b::/96`` and 6to4 ``2002::/16`` -- are judged entirely as that IPv4 address (both
  the refusal and the allowance). Teredo (``2001::/32``, whose client address is obfuscated) and
  local-use NAT64 (``64:ff9b:1::/48``, site-specific mapping) are refused unless allowed.
* ``localhost`` and names under ``.localhost``, ``.local`` or ``.internal`` get no special
  treatment: like every name they are judged by what they resolve to, the only thing that matters
  (the API reference's own example is ``billing.internal.example``).
* Refusal messages name the host and the kind of address, never the URL's path or query (which
  may carry a token) and never an address that a *name* resolved to (no internal DNS recon).
* URLs with userinfo are refused, including an empty one (``http://@host``) and any ``@`` in the
  authority, as are ports outside 1..65535 and hosts that are not plain DNS names.

* Callback ports are 80, 443 or 1024-65535: the ports below 1024 besides the web's own are
  other protocols' (SSH, SMTP, ...), which no receiver of webhooks listens on.

One guard, two policies
-----------------------
CSV links come from upstream, not from a client, but they are no more trusted: a compromised
or impersonated upstream (or a bug in it) could point them at internal services, and the
gateway streams whatever a link answers to the caller. So links go through the same guard
with the file policy (``CallbackPolicy.for_files``, ``guarded_file_client``): ``https`` to a
public address, or anything inside ``GATEWAY_FILE_ALLOWED_NETWORKS`` (plain ``http`` only
there; the sandbox's loopback address in development), never a metadata address; any port.
Plain ``http`` requests go through a pool of their own whose policy admits only the allowed
networks, because the connect-time check sees an address, not a scheme.

The default resolver is asyncio's ``getaddrinfo``, so this module expects an asyncio event loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, TypeAlias

import anyio
import httpcore
import httpx

__all__ = [
    "MAX_URL_LENGTH",
    "METADATA_ADDRESSES",
    "CallbackAddressRefused",
    "CallbackPolicy",
    "CallbackRefused",
    "GuardedTransport",
    "Resolver",
    "check_callback_url",
    "guarded_client",
    "guarded_file_client",
    "parse_allowed_networks",
    "system_resolver",
]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_URL_LENGTH = 2048
_SCHEMES = {"http": 80, "https": 443}
_RESOLVE_TIMEOUT = 10.0

# Always refused, whatever GATEWAY_WEBHOOK_ALLOWED_NETWORKS says.
METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ... instance metadata
        "169.254.170.2",  # AWS ECS task metadata and credentials
        "169.254.170.23",  # AWS EKS Pod Identity agent
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
        "168.63.129.16",  # Azure WireServer (a public address, but only meaningful in Azure)
        "fd00:ec2::254",  # AWS instance metadata over IPv6
        "fd00:ec2::23",  # AWS EKS Pod Identity agent over IPv6
        "fd20:ce::254",  # GCP metadata for IPv6-only instances
        "fe80::a9fe:a9fe",  # OpenStack metadata over IPv6
    )
)

# Special-purpose ranges (IANA registries), first match names the reason.
_FORBIDDEN: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), label)
    for net, label in (
        ("0.0.0.0/8", "an unspecified ('this network')"),
        ("10.0.0.0/8", "a private"),
        ("100.64.0.0/10", "a carrier-grade NAT (shared)"),
        ("127.0.0.0/8", "a loopback"),
        ("169.254.0.0/16", "a link-local"),
        ("172.16.0.0/12", "a private"),
        ("192.0.0.0/24", "an IETF protocol assignment"),
        ("192.0.2.0/24", "a documentation"),
        ("192.88.99.0/24", "a deprecated 6to4 relay anycast"),
        ("192.168.0.0/16", "a private"),
        ("198.18.0.0/15", "a benchmarking"),
        ("198.51.100.0/24", "a documentation"),
        ("203.0.113.0/24", "a documentation"),
        ("224.0.0.0/4", "a multicast"),
        ("255.255.255.255/32", "the broadcast"),
        ("240.0.0.0/4", "a reserved"),
        ("::/128", "an unspecified"),
        ("::1/128", "a loopback"),
        ("64:ff9b:1::/48", "a local-use NAT64"),
        ("100::/64", "a discard-only"),
        ("2001::/32", "a Teredo"),
        ("2001:db8::/32", "a documentation"),
        ("2001::/23", "an IETF protocol assignment"),
        ("3fff::/20", "a documentation"),
        ("fc00::/7", "a unique local (private)"),
        ("fe80::/10", "a link-local"),
        ("fec0::/10", "a site-local"),
        ("ff00::/8", "a multicast"),
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_IPV4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")

_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*", re.IGNORECASE)
_DNS_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*)")


class CallbackRefused(ValueError):
    """A callback URL the gateway will not call; ``reason`` says why (safe to show the client)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CallbackAddressRefused(httpx.ConnectError):
    """Raised by ``GuardedTransport`` instead of connecting to a forbidden address."""

    def __init__(self, reason: str, *, request: httpx.Request | None = None) -> None:
        super().__init__(f"callback refused: {reason}", request=request)
        self.reason = reason


def _normalise_network(net: IPNetwork) -> IPNetwork:
    # An allowance written as ::ffff:a.b.c.d/n means the IPv4 network, which is how such
    # addresses are judged.
    if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(_IPV4_MAPPED):
        v4 = ipaddress.IPv4Address(int(net.network_address) & 0xFFFFFFFF)
        return ipaddress.IPv4Network((v4, net.prefixlen - 96))
    return net


def parse_allowed_networks(
    value: str | Iterable[str] | None, setting: str = "GATEWAY_WEBHOOK_ALLOWED_NETWORKS"
) -> tuple[IPNetwork, ...]:
    """Parse ``GATEWAY_WEBHOOK_ALLOWED_NETWORKS``: comma-separated CIDRs or bare addresses.

    A bare address becomes a /32 or /128; empty entries are skipped. An entry with host bits set
    (``10.0.0.1/8``) is an error, like any other bad entry: ``ValueError`` naming it.
    """
    if value is None:
        return ()
    entries = value.split(",") if isinstance(value, str) else value
    networks: list[IPNetwork] = []
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        try:
            network = ipaddress.ip_network(entry, strict=True)
        except ValueError as exc:
            raise ValueError(f"{setting}: {entry!r} is not a network or address: {exc}") from None
        networks.append(_normalise_network(network))
    return tuple(networks)


@dataclass(frozen=True, slots=True)
class CallbackPolicy:
    """Which otherwise forbidden networks the guarded client may reach (never metadata
    addresses), for what (``purpose``, named in refusals), on which ports, and whether only
    the allowed networks may be reached at all (``allowed_only``: plain-http file links)."""

    allowed_networks: tuple[IPNetwork, ...] = ()
    purpose: str = "callbacks"
    any_port: bool = False  # else 80, 443 and 1024-65535 only
    allowed_only: bool = False

    @classmethod
    def from_setting(cls, value: str | Iterable[str] | None) -> CallbackPolicy:
        """Build the policy from ``GATEWAY_WEBHOOK_ALLOWED_NETWORKS`` (see ``parse_..``)."""
        return cls(parse_allowed_networks(value))

    @classmethod
    def for_files(cls, value: str | Iterable[str] | None) -> CallbackPolicy:
        """The policy of CSV links, from ``GATEWAY_FILE_ALLOWED_NETWORKS``."""
        networks = parse_allowed_networks(value, "GATEWAY_FILE_ALLOWED_NETWORKS")
        return cls(networks, "file links", any_port=True)

    def for_plain_http(self) -> CallbackPolicy:
        return CallbackPolicy(
            self.allowed_networks, f"{self.purpose} over plain http", self.any_port, True
        )

    def allows(self, address: IPAddress) -> bool:
        return any(address in network for network in self.allowed_networks)

    def port_problem(self, port: int) -> str | None:
        if not 1 <= port <= 65535:
            return f"port {port} is out of range"
        if not self.any_port and port not in (80, 443) and port < 1024:
            return f"port {port} is not allowed; use 80, 443 or a port from 1024 to 65535"
        return None


class Resolver(Protocol):
    """Answers every IP address (as strings) a host name resolves to; ``OSError`` if none."""

    async def __call__(self, host: str, port: int, /) -> list[str]: ...


async def system_resolver(host: str, port: int, /) -> list[str]:
    """All A/AAAA answers for ``host`` from the OS resolver, in its preferred order."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(
        dict.fromkeys(
            str(sockaddr[0])
            for family, _, _, _, sockaddr in infos
            if family in (socket.AF_INET, socket.AF_INET6)
        )
    )


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _address_problem(address: IPAddress, policy: CallbackPolicy) -> str | None:
    """Why ``address`` is forbidden (e.g. "a loopback address"), or None when it may be reached."""
    judged: IPAddress = address
    prefix = ""
    if isinstance(address, ipaddress.IPv6Address):
        address = judged = ipaddress.IPv6Address(int(address))  # drop any %zone
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            judged, prefix = embedded, "an IPv6 address embedding "
    if judged in METADATA_ADDRESSES or address in METADATA_ADDRESSES:
        return f"{prefix}a cloud metadata address"
    if policy.allows(judged):
        return None
    if policy.allowed_only:
        return f"{prefix}an address outside the allowed networks"
    for network, label in _FORBIDDEN:
        if judged in network:
            return f"{prefix}{label} address"
    if judged.is_multicast or judged.is_reserved or not judged.is_global:
        return f"{prefix}a special-purpose address"
    return None


@dataclass(frozen=True, slots=True)
class _Target:
    host: str  # as httpcore connects to it: IDNA-encoded, IPv6 without brackets
    port: int
    literal: IPAddress | None


def _host_literal(host: str) -> IPAddress | None:
    """The IP address an IP-literal host denotes, None for a DNS name; refuses everything else."""
    if ":" in host:
        if "%" in host:
            raise CallbackRefused(f"host [{host}] has an IPv6 zone identifier")
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise CallbackRefused(f"host [{host}] is not a valid IPv6 address") from None
    labels = host.removesuffix(".").split(".")
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        try:
            return ipaddress.IPv4Address(host)
        except ValueError:
            raise CallbackRefused(
                f"host {host!r} is a non-canonical numeric address; "
                "write an IPv4 address as four decimal numbers"
            ) from None
    if len(host) > 253 or not all(_DNS_LABEL.fullmatch(label) for label in labels):
        raise CallbackRefused(f"host {host!r} is not a valid DNS name")
    return None


def _target(url: httpx.URL, policy: CallbackPolicy | None = None) -> _Target:
    """Check everything about a parsed URL that needs no lookup."""
    if url.scheme not in _SCHEMES:
        if not url.scheme:
            raise CallbackRefused("must be an absolute http or https URL")
        raise CallbackRefused(f"scheme {url.scheme[:20]!r} is not allowed; use http or https")
    if url.userinfo:
        raise CallbackRefused("must not contain user information (user:password@)")
    host = url.raw_host.decode("ascii")
    if not host:
        raise CallbackRefused("has no host")
    port = url.port if url.port is not None else _SCHEMES[url.scheme]
    problem = (policy or CallbackPolicy(any_port=True)).port_problem(port)
    if problem is not None:
        raise CallbackRefused(problem)
    return _Target(host, port, _host_literal(host))


def _describe(target: _Target) -> str:
    return f"[{target.host}]" if ":" in target.host else repr(target.host)


def _refusal(target: _Target, problem: str, policy: CallbackPolicy) -> str:
    verb = "is" if target.literal is not None else "resolves to"
    return f"host {_describe(target)} {verb} {problem}, which {policy.purpose} may not reach"


def _parse_answers(answers: Iterable[str]) -> list[tuple[str, IPAddress]]:
    parsed: list[tuple[str, IPAddress]] = []
    for answer in answers:
        try:
            parsed.append((answer, ipaddress.ip_address(answer)))
        except ValueError:
            raise CallbackRefused(
                "the resolver returned something that is not an address"
            ) from None
    return parsed


async def check_callback_url(
    url: str,
    policy: CallbackPolicy,
    resolver: Resolver = system_resolver,
    *,
    lookup_timeout: float = _RESOLVE_TIMEOUT,
) -> None:
    """Submission-time check; raises ``CallbackRefused`` with a reason fit for a 422 problem.

    Refuses a URL that is not http(s), has no host, carries userinfo, exceeds 2048 characters, uses
    a numeric host trick, does not resolve within ``lookup_timeout`` seconds, or whose host is, or
    resolves to (any answer), a forbidden address under ``policy``.
    """
    if len(url) > MAX_URL_LENGTH:
        raise CallbackRefused(f"is longer than {MAX_URL_LENGTH} characters")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise CallbackRefused(f"is not a valid URL: {exc}") from None
    authority = _AUTHORITY.match(url)
    if authority is not None and "@" in authority.group(1):
        raise CallbackRefused("must not contain user information (user:password@)")
    target = _target(parsed, policy)
    if target.literal is not None:
        addresses = [target.literal]
    else:
        try:
            with anyio.fail_after(lookup_timeout):
                answers = await resolver(target.host, target.port)
        except (OSError, TimeoutError):
            answers = []
        if not answers:
            raise CallbackRefused(f"host {_describe(target)} does not resolve")
        addresses = [address for _, address in _parse_answers(answers)]
    for address in addresses:
        problem = _address_problem(address, policy)
        if problem is not None:
            raise CallbackRefused(_refusal(target, problem, policy))


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Network backend that resolves once, vets every answer and connects to a vetted IP."""

    def __init__(self, policy: CallbackPolicy, resolver: Resolver) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = httpcore.AnyIOBackend()

    async def _vetted(self, target: _Target, lookup_timeout: float | None) -> list[str]:
        if target.literal is not None:
            candidates = [(target.host, target.literal)]
        else:
            try:
                with anyio.fail_after(lookup_timeout):
                    answers = await self._resolver(target.host, target.port)
            except TimeoutError:
                raise httpcore.ConnectTimeout(f"resolving {_describe(target)} timed out") from None
            except OSError:
                raise httpcore.ConnectError(f"host {_describe(target)} does not resolve") from None
            if not answers:
                raise httpcore.ConnectError(f"host {_describe(target)} does not resolve")
            try:
                candidates = _parse_answers(answers)
            except CallbackRefused as exc:
                raise CallbackAddressRefused(exc.reason) from None
        for _, address in candidates:
            problem = _address_problem(address, self._policy)
            if problem is not None:
                raise CallbackAddressRefused(_refusal(target, problem, self._policy))
        return list(dict.fromkeys(text for text, _ in candidates))

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        deadline = None if timeout is None else anyio.current_time() + timeout
        target = _Target(host, port, _host_literal_or_refuse(host))
        addresses = await self._vetted(target, timeout)
        error: Exception | None = None
        for address in addresses:  # in the resolver's order; the connect timeout bounds them all
            remaining = None if deadline is None else deadline - anyio.current_time()
            if remaining is not None and remaining <= 0:
                break
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=remaining,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error or httpcore.ConnectTimeout(f"connecting to {_describe(target)} timed out")

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise CallbackAddressRefused("callbacks may not use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _host_literal_or_refuse(host: str) -> IPAddress | None:
    try:
        return _host_literal(host)
    except CallbackRefused as exc:
        raise CallbackAddressRefused(exc.reason) from None


class GuardedTransport(httpx.AsyncHTTPTransport):
    """An httpx transport that only connects to addresses ``policy`` allows.

    Use it as ``httpx.AsyncClient(transport=GuardedTransport(policy), follow_redirects=False,
    trust_env=False)`` -- or simply ``guarded_client(policy)``. ``trust_env=False`` is essential:
    with it on, httpx mounts separate, unguarded transports for proxies named in the environment
    (``HTTP_PROXY``, ``ALL_PROXY``, ...) and requests would bypass this one. Redirects are the
    caller's business (the gateway never follows them); any hop that is followed is vetted anew.

    Each connection resolves the host once through ``resolver``, refuses
    (``CallbackAddressRefused``, an ``httpx.ConnectError``) if any answer is forbidden, then
    connects to a vetted IP, trying the answers in order within the connect timeout. The request
    itself is unchanged, so the ``Host`` header, TLS SNI and certificate verification use the
    URL's host name. Timeouts come from the client (``httpx.Timeout``); ``verify`` is an
    ``ssl.SSLContext`` or a bool, as in httpx. Lookup failures and unreachable addresses raise
    the usual ``httpx.ConnectError`` / ``httpx.ConnectTimeout``: a retryable delivery failure.
    """

    def __init__(
        self,
        policy: CallbackPolicy,
        resolver: Resolver = system_resolver,
        *,
        verify: ssl.SSLContext | bool = True,
        limits: httpx.Limits | None = None,
    ) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        ssl_context = (
            verify
            if isinstance(verify, ssl.SSLContext)
            else httpx.create_ssl_context(verify=verify, trust_env=False)
        )
        super().__init__(verify=ssl_context, trust_env=False, limits=limits)
        self._policy = policy
        # Same pool httpx would build (no proxy, HTTP/1.1, no retries), with our network backend.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=_GuardedBackend(policy, resolver),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            _target(request.url, self._policy)
        except CallbackRefused as exc:
            raise CallbackAddressRefused(exc.reason, request=request) from None
        return await super().handle_async_request(request)


class _SchemeSplitTransport(httpx.AsyncBaseTransport):
    """``https`` through one guarded transport, plain ``http`` through another (stricter)."""

    def __init__(self, secure: httpx.AsyncBaseTransport, plain: httpx.AsyncBaseTransport) -> None:
        self._secure = secure
        self._plain = plain

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = self._plain if request.url.scheme == "http" else self._secure
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        await self._secure.aclose()
        await self._plain.aclose()


def guarded_client(
    policy: CallbackPolicy,
    resolver: Resolver = system_resolver,
    *,
    timeout: float = 15.0,
    verify: ssl.SSLContext | bool = True,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for webhook delivery: guarded, no redirects, no env proxies."""
    return httpx.AsyncClient(
        transport=GuardedTransport(policy, resolver, verify=verify),
        follow_redirects=False,
        trust_env=False,
        timeout=timeout,
    )


def guarded_file_client(
    policy: CallbackPolicy,
    resolver: Resolver = system_resolver,
    *,
    timeout: httpx.Timeout,
    verify: ssl.SSLContext | bool = True,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for CSV links under the file policy (``for_files``): https to
    public addresses, plain http only inside the allowed networks; no redirects, no env
    proxies, no credentials. The pools are not capped: what bounds the connections is each
    client's download cap and the download deadline, so one client's downloads can never
    hold the connections another's need."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=20)
    secure = GuardedTransport(policy, resolver, verify=verify, limits=limits)
    plain = GuardedTransport(policy.for_plain_http(), resolver, verify=verify, limits=limits)
    return httpx.AsyncClient(
        transport=_SchemeSplitTransport(secure, plain),
        follow_redirects=False,
        trust_env=False,
        timeout=timeout,
    )
