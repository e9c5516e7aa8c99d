"""Deterministic activity records and the streamed CSV files of an export.

A `RecordSource` turns (seed, row index) into an activity record: every value is derived from
a hash of the seed and the index, so the same task's files are byte-identical on every
download, and any row can be made without making the ones before it (O(1) per row, nothing
kept in memory). `csv_file_chunks` renders one file of an export as an async stream of bytes.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, TypeVar

from app.sandbox.config import CONNECTION_DATA_KEYS, DEFAULT_CUSTOM_DATA_KEYS, RECORD_KEYS
from app.sandbox.filters import ParsedFilter

EVENT_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("agreed", 40),
    ("displayed", 25),
    ("visited", 15),
    ("updated", 8),
    ("sent", 6),
    ("reminded", 3),
    ("disagreed", 3),
)
_EVENT_TABLE: tuple[str, ...] = tuple(name for name, weight in EVENT_WEIGHTS for _ in range(weight))

_FIRST: tuple[str, ...] = ("ada", "grace", "alan", "linus", "margaret", "ken", "barbara", "dennis")
_FIRST += ("frances", "edsger", "radia", "john", "sophie", "tim", "katherine", "niklaus")
_LAST: tuple[str, ...] = (
    "lovelace",
    "hopper",
    "turing",
    "torvalds",
    "hamilton",
    "thompson",
    "liskov",
    "ritchie",
)
_LAST += ("allen", "dijkstra", "perlman", "mccarthy", "wilson", "berners-lee", "johnson", "wirth")
_MAIL = ("example.com", "example.org", "mail.example.net", "corp.example.com")
_DOMAINS = ("shop.example.com", "app.example.io", "checkout.example.net", "www.example.org")
_PATHS = ("/checkout", "/signup", "/account/terms", "/pricing", "/cart/confirm", "/")
_QUERIES = ("", "", "?plan=pro", "?utm_source=newsletter&utm_medium=email", "?ref=partner")
_TITLES = (
    "Checkout — Acme, Inc.",
    'Sign up for "Acme Pro"',
    "Terms of Service",
    "Pricing",
    "Confirm your order",
    "Café Ünïcode ✓ Home",
)
_TRICKY_TITLES = ('Order "Summer, 2024"\nspecial', "line one\r\nline two", "tab\there, ünï ✓")
_REFERRERS = (
    "",
    "https://www.google.com/",
    "https://news.example.com/article?id=7",
    "https://partner.example.net/",
)
_ZONES = (
    "America/New_York",
    "Europe/Berlin",
    "Asia/Tokyo",
    "America/Los_Angeles",
    "UTC",
    "Australia/Sydney",
)
_LOCALES = ("en-US", "en-GB", "de-DE", "ja-JP", "fr-FR", "es-ES")
_AGENTS = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:127.0) Gecko/20100101 Firefox/127.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Mobile Safari/537.36",
)
_SYSTEMS = ("Mac OS X 10.15", "Windows 10", "iOS 17.5", "Android 14")
_ENVIRONMENTS = ("Desktop", "Desktop", "Mobile", "Tablet")
_RESOLUTIONS = ("1920x1080", "2560x1440", "1440x900", "390x844", "412x915", "1024x768")
_DEPTHS = (24, 24, 30, 32)
_PLANS = ("free", "starter", "pro", "enterprise")
_NOTES = ("", "", "Renewal, annual", 'Asked for "net 30"', "Référence client ✓")
_TRICKY_NOTES = ('multi\nline "note", with commas', "crlf\r\ninside", "")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_EXPORT_START = datetime(2020, 7, 1, tzinfo=UTC)
DEFAULT_EXPORT_STEP_MS = 37_531
ACTIVITY_START = datetime(2020, 7, 21, tzinfo=UTC)
ACTIVITY_STEP_MS = 3_600_000

Getter = Callable[[int, bytes], Any]
_T = TypeVar("_T")


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


@lru_cache(maxsize=4096)
def _day_text(day: int) -> str:
    return (_EPOCH + timedelta(days=day)).strftime("%Y-%m-%d")


def format_ms(ms: int) -> str:
    """Milliseconds since the epoch as `2020-07-21T15:34:30.051Z`."""
    day, rest = divmod(ms, 86_400_000)
    seconds, millis = divmod(rest, 1000)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    return f"{_day_text(day)}T{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}Z"


def format_time(moment: datetime) -> str:
    """An aware datetime as `2020-07-21T15:34:30.051Z`."""
    return format_ms(_ms(moment))


def csv_text(value: Any) -> str:
    """How a record value is written in a CSV cell."""
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


class RecordSource:
    """Deterministic activity records of one export (or of one site's listing data set)."""

    def __init__(
        self,
        seed: str,
        *,
        site: int,
        account: int,
        count: int,
        start: datetime = DEFAULT_EXPORT_START,
        step_ms: int = DEFAULT_EXPORT_STEP_MS,
        flt: ParsedFilter | None = None,
        tricky: bool = False,
    ) -> None:
        self.seed = seed
        self._prefix = hashlib.blake2b(seed.encode(), digest_size=16).digest()
        self.site = site
        self.account = account
        self.count = count
        self.tricky = tricky
        self.forced: dict[str, str] = {}
        start_ms, step = _ms(start), step_ms
        if flt is not None:
            self.forced = {k: v for k, v in flt.forced.items() if k != "created_time"}
            if flt.time_from is not None:
                start_ms = _ms(flt.time_from)
            if flt.time_to is not None:
                end_ms = _ms(flt.time_to)
                if flt.time_from is None:
                    start_ms = end_ms - step * max(count, 1)
                step = max(1, (end_ms - start_ms) // max(count, 1))
        self.start_ms = start_ms
        self.step_ms = max(1, step)
        self._getters: dict[str, Getter] = {
            "id": self._id,
            "uuid": _uuid,
            "version": self._version,
            "contract": self._contract,
            "group": lambda i, h: 2000 + self._contract(i, h) % 7,
            "site": lambda i, h: self.site,
            "account": lambda i, h: self.account,
            "signer_id": self._signer,
            "event_type": lambda i, h: _EVENT_TABLE[(h[60] << 8 | h[61]) % len(_EVENT_TABLE)],
            "batch": self._batch,
            "created_time": lambda i, h: format_ms(self._time_ms(i, h)),
            "connection_data.page_title": self._title,
            "connection_data.page_url": lambda i, h: (
                f"https://{_pick(_DOMAINS, h, 5)}{_pick(_PATHS, h, 6)}{_pick(_QUERIES, h, 7)}"
            ),
            "connection_data.page_domain": lambda i, h: _pick(_DOMAINS, h, 5),
            "connection_data.page_path": lambda i, h: _pick(_PATHS, h, 6),
            "connection_data.page_query": lambda i, h: _pick(_QUERIES, h, 7),
            "connection_data.hostname": lambda i, h: _pick(_DOMAINS, h, 5),
            "connection_data.referrer": lambda i, h: _pick(_REFERRERS, h, 8),
            "connection_data.browser_timezone": lambda i, h: _pick(_ZONES, h, 9),
            "connection_data.browser_locale": lambda i, h: _pick(_LOCALES, h, 10),
            "connection_data.user_agent": lambda i, h: _pick(_AGENTS, h, 11),
            "connection_data.device_fingerprint": lambda i, h: h[16:32].hex(),
            "connection_data.operating_system": lambda i, h: _pick(_SYSTEMS, h, 11),
            "connection_data.environment": lambda i, h: _pick(_ENVIRONMENTS, h, 11),
            "connection_data.screen_color_depth": lambda i, h: _pick(_DEPTHS, h, 12),
            "connection_data.screen_resolution": lambda i, h: _pick(_RESOLUTIONS, h, 13),
            "connection_data.cookies": lambda i, h: _pick(range(10), h, 14) != 0,
            "connection_data.remote_address": self._address,
            "custom_data.vip": lambda i, h: _pick(range(5), h, 15) == 0,
            "custom_data.plan": lambda i, h: _pick(_PLANS, h, 16),
            "custom_data.order_id": lambda i, h: f"ORD-{int.from_bytes(h[16:20]) % 1_000_000:06d}",
            "custom_data.first_name": lambda i, h: _pick(_FIRST, h, 0).capitalize(),
            "custom_data.notes": self._notes,
        }

    # --- per-row values ------------------------------------------------------------------------
    def row_hash(self, index: int) -> bytes:
        """64 pseudo-random bytes for row `index`.

        Layout: 0-15 uuid (8-14 also address, batch), 16-31 device fingerprint (16-19 order id,
        24-31 time jitter), 32-39 record id, 40-63 one selector byte per `_pick` slot 0-23
        (event type uses slots 20 and 21).
        """
        return hashlib.blake2b(self._prefix + index.to_bytes(8, "big"), digest_size=64).digest()

    def _time_ms(self, index: int, h: bytes) -> int:
        return self.start_ms + index * self.step_ms + int.from_bytes(h[24:32]) % self.step_ms

    def _id(self, index: int, h: bytes) -> str:
        seconds = self._time_ms(index, h) // 1000
        return f"{seconds & 0xFFFFFFFF:08x}{h[32:40].hex()}"

    def _contract(self, index: int, h: bytes) -> int:
        return 10_400 + _pick(range(12), h, 22)

    def _version(self, index: int, h: bytes) -> str:
        contract = self._contract(index, h)
        return f"5f0c{contract:08x}{_pick(range(3), h, 23):012x}"

    def _signer(self, index: int, h: bytes) -> str:
        first, last = _pick(_FIRST, h, 0), _pick(_LAST, h, 1)
        number = (h[42] << 8 | h[43]) % 1000  # slots 2 and 3
        return f"{first}.{last}{number}@{_pick(_MAIL, h, 4)}"

    def _batch(self, index: int, h: bytes) -> str | None:
        if h[12] % 4:
            return None
        return f"5f1b{h[13] % 50:020x}"

    def _title(self, index: int, h: bytes) -> str:
        if self.tricky and _pick(range(3), h, 19) == 0:
            return _pick(_TRICKY_TITLES, h, 17)
        return _pick(_TITLES, h, 17)

    def _notes(self, index: int, h: bytes) -> str:
        if self.tricky and h[14] % 2 == 0:
            return _pick(_TRICKY_NOTES, h, 18)
        return _pick(_NOTES, h, 18)

    def _address(self, index: int, h: bytes) -> str:
        a = 11 + h[8] % 180
        if a in (100, 127, 169, 172):
            a += 1
        return f"{a}.{h[9]}.{h[10]}.{1 + h[11] % 254}"

    # --- rows ----------------------------------------------------------------------------------
    def getter(self, path: str) -> Getter:
        """The value function of a (dotted) field; forced filter values win."""
        if path in self.forced:
            forced = self.forced[path]
            return lambda i, h: forced
        known = self._getters.get(path)
        if known is not None:
            return known
        if path.startswith("custom_data."):
            key = path.removeprefix("custom_data.")
            return lambda i, h: f"{key}-{(h[44] << 8 | h[45]) % 1000}"
        return lambda i, h: None

    def flat(self, index: int, paths: Sequence[str]) -> dict[str, Any]:
        """Row `index` as {dotted path: value}."""
        h = self.row_hash(index)
        return {path: self.getter(path)(index, h) for path in paths}

    def record(self, index: int, custom_keys: Sequence[str] = DEFAULT_CUSTOM_DATA_KEYS) -> Any:
        """Row `index` as the nested JSON object of the /activity route."""
        h = self.row_hash(index)
        record: dict[str, Any] = {key: self.getter(key)(index, h) for key in RECORD_KEYS}
        record["custom_data"] = {
            key: self.getter(f"custom_data.{key}")(index, h) for key in custom_keys
        }
        record["connection_data"] = {
            key: self.getter(f"connection_data.{key}")(index, h) for key in CONNECTION_DATA_KEYS
        }
        return record


def _pick(pool: Sequence[_T], h: bytes, slot: int) -> _T:
    """An item chosen by selector byte `slot` (0-23) of a row hash."""
    return pool[h[40 + slot] % len(pool)]


def _uuid(index: int, h: bytes) -> str:
    raw = bytearray(h[:16])
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def file_count(rows: int, rows_per_file: int) -> int:
    """Files of an export: one per started chunk of rows, and at least one (header only)."""
    return max(1, -(-rows // rows_per_file))


class CsvAbortedError(Exception):
    """Raised inside a CSV stream to drop the connection mid-download (fault injection)."""


async def csv_file_chunks(
    source: RecordSource,
    columns: Sequence[str],
    first_row: int,
    stop_row: int,
    *,
    bom: bool = False,
    trailing_newline: bool = True,
    crlf: bool = False,
    chunk_rows: int = 512,
    fault_after_bytes: int | None = None,
    chunk_delay: float = 0.0,
) -> AsyncIterator[bytes]:
    """One CSV file (header + rows [first_row, stop_row)), as chunks of UTF-8 bytes (with a
    pause of ``chunk_delay`` seconds after each)."""
    terminator = "\r\n" if crlf else "\n"
    getters = [source.getter(column) for column in columns]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=terminator)
    if bom:
        buffer.write("\ufeff")
    writer.writerow(columns)
    sent = 0
    index = first_row
    while True:
        stop = min(stop_row, index + chunk_rows)
        row_hash = source.row_hash
        for i in range(index, stop):
            h = row_hash(i)
            writer.writerow([csv_text(get(i, h)) for get in getters])
        index = stop
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        last = index >= stop_row
        if last and not trailing_newline and text.endswith(terminator):
            text = text[: -len(terminator)]
        chunk = text.encode()
        if fault_after_bytes is not None and sent + len(chunk) > fault_after_bytes:
            part = chunk[: max(0, fault_after_bytes - sent)]
            if part:
                yield part
            raise CsvAbortedError(f"CSV stream aborted after {fault_after_bytes} bytes")
        sent += len(chunk)
        if chunk:
            yield chunk
        if last:
            return
        if chunk_delay > 0:
            await asyncio.sleep(chunk_delay)
        await asyncio.sleep(0)


async def timeline_file_chunks(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    bom: bool = False,
    trailing_newline: bool = True,
    crlf: bool = False,
) -> AsyncIterator[bytes]:
    """One CSV file of a timeline export: the header and ``rows``, as one chunk."""
    terminator = "\r\n" if crlf else "\n"
    buffer = io.StringIO()
    if bom:
        buffer.write("\ufeff")
    writer = csv.writer(buffer, lineterminator=terminator)
    writer.writerow(columns)
    writer.writerows(rows)
    text = buffer.getvalue()
    if not trailing_newline and text.endswith(terminator):
        text = text[: -len(terminator)]
    yield text.encode()
