"""The sandbox's reading of the upstream filter language, and its test markers.

Upstream's grammar is confirmed by examples only (`path OP value` clauses joined by ` and `),
so this reader is lenient: it understands `==`, `!=`, `>=`, `<=`, `>`, `<`, and ignores any
clause it cannot read. Markers let tests steer the sandbox through the filter alone:
`__reject__` (answer 400), `__never__` (the task never finishes), `__fail__` (the task fails),
`__empty__` (the export has no rows).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

_AND = re.compile(r"\s+and\s+", re.IGNORECASE)
_CLAUSE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(==|!=|>=|<=|>|<)\s*(.*?)\s*$")


@dataclass(frozen=True, slots=True)
class Clause:
    """One readable `path OP value` clause (surrounding quotes stripped from the value)."""

    path: str
    op: str
    value: str

    def matches(self, actual: object) -> bool:
        """Whether a record value satisfies the clause (numbers numerically, else as text)."""
        if isinstance(actual, bool):
            left: object = "true" if actual else "false"
        else:
            left = actual
        right: object = self.value
        if isinstance(left, int):
            try:
                right = int(self.value)
            except ValueError:
                left = str(left)
        else:
            left = "" if left is None else str(left)
        if self.op == "==":
            return left == right
        if self.op == "!=":
            return left != right
        try:
            if self.op == ">=":
                return left >= right  # type: ignore[operator]
            if self.op == "<=":
                return left <= right  # type: ignore[operator]
            if self.op == ">":
                return left > right  # type: ignore[operator]
            return left < right  # type: ignore[operator]
        except TypeError:
            return False


@dataclass(frozen=True, slots=True)
class ParsedFilter:
    """What the sandbox understood of a filter."""

    raw: str
    clauses: tuple[Clause, ...] = ()
    reject: bool = False
    never: bool = False
    fail: bool = False
    empty: bool = False
    forced: dict[str, str] = field(default_factory=dict)
    """`path == value` clauses: exported rows carry this value in that column."""
    time_from: datetime | None = None
    time_to: datetime | None = None

    def matches(self, flat: dict[str, object]) -> bool:
        """Whether a flattened record satisfies every clause (unknown paths never match)."""
        for clause in self.clauses:
            if clause.path not in flat or not clause.matches(flat[clause.path]):
                return False
        return True


def parse_filter(raw: str | None) -> ParsedFilter:
    """Read a filter leniently; never raises."""
    text = raw or ""
    clauses: list[Clause] = []
    forced: dict[str, str] = {}
    time_from: datetime | None = None
    time_to: datetime | None = None
    for part in _AND.split(text.strip()) if text.strip() else []:
        match = _CLAUSE.match(part)
        if match is None or "__" in part:
            continue
        path, op, value = match.group(1), match.group(2), _unquote(match.group(3))
        clause = Clause(path, op, value)
        clauses.append(clause)
        if op == "==":
            forced[path] = value
        if path == "created_time":
            moment = parse_time(value)
            if moment is not None and op in (">=", ">"):
                time_from = moment
            elif moment is not None and op in ("<=", "<"):
                time_to = moment
    return ParsedFilter(
        raw=text,
        clauses=tuple(clauses),
        reject="__reject__" in text,
        never="__never__" in text,
        fail="__fail__" in text,
        empty="__empty__" in text,
        forced=forced,
        time_from=time_from,
        time_to=time_to,
    )


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def strict_problem(raw: str | None) -> str | None:
    """What a strict upstream refuses in a filter (None: nothing): any operator but `==` and
    `>=`, any clause it cannot read, and `>=` on created_time with anything but a date."""
    text = (raw or "").strip()
    for part in _AND.split(text) if text else []:
        if "__" in part:
            continue  # the sandbox's own test markers
        match = _CLAUSE.match(part)
        if match is None:
            return f"Cannot read filter clause {part!r}."
        path, op, value = match.group(1), match.group(2), _unquote(match.group(3))
        if op not in ("==", ">="):
            return f"Unsupported operator {op!r}."
        if path == "created_time" and op == ">=" and not _DATE.match(value):
            return "created_time>= takes a date (YYYY-MM-DD)."
    return None


def parse_time(value: str) -> datetime | None:
    """`YYYY-MM-DD` or an ISO 8601 time (with `Z`), as an aware UTC datetime."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value
