r"""The export filter language: validation, a small AST and a canonical (normalised) form.

The upstream's filter syntax is documented by example only (``created_time>=2020-10-10 and
event_type==agreed``); it looks RSQL/FIQL-like. This module accepts the following language and
rejects everything else with a :class:`FilterSyntaxError` that says where and what was expected.

Grammar (EBNF). ``ws`` is one or more spaces, tabs, CRs or LFs; ``[ws]`` is optional whitespace.
Keywords and the list operators are case-insensitive; ``and`` binds tighter than ``or``::

    filter   = [ws], or-expr, [ws] ;
    or-expr  = and-expr, { ws, "or", ws, and-expr } ;
    and-expr = term, { ws, "and", ws, term } ;
    term     = "(", [ws], or-expr, [ws], ")" | clause ;
    clause   = path, [ws], ( plain-op, [ws], value | list-op, [ws], list ) ;
    plain-op = "==" | "!=" | ">=" | "<=" | ">" | "<" ;
    list-op  = "=in=" | "=out=" ;
    list     = "(", [ws], value, { [ws], ",", [ws], value }, [ws], ")" ;
    path     = segment, { ".", segment } ;
    segment  = path-char, { path-char } ;          (* path-char: ASCII letter, digit, _ or - *)
    value    = bare | quoted ;
    bare     = bare-char, { bare-char } ;          (* any printable character except whitespace
                                                      and  " ' ( ) , ; = ! < > \  *)
    quoted   = '"', { char - ( '"' | "\" ) | escape }, '"'
             | "'", { char - ( "'" | "\" ) | escape }, "'" ;
    escape   = "\", ( '"' | "'" | "\" ) ;         (* char: any printable character *)

Further rules:

- the ``ws`` around a keyword may be left out next to a parenthesis: ``(a==1)or(b==2)``;
- ``and`` and ``or`` (any case) are reserved: never a path, never a bare value (quote it);
- a bare value that starts with four digits and a dash must be a valid calendar date
  ``YYYY-MM-DD`` or ISO 8601 time ``YYYY-MM-DDThh:mm[:ss[.f{1,9}]][Z|+hh:mm|-hh:mm]``;
  a quoted value is taken literally;
- non-printable characters (controls, format characters such as zero-width spaces, ...) are
  rejected anywhere, except tab/CR/LF as whitespace between tokens;
- a filter is at most :data:`MAX_FILTER_LENGTH` characters and nests parentheses at most
  :data:`MAX_NESTING_DEPTH` deep.

The AST is canonical: a :class:`Group` has at least two items and never directly contains a
group with the same operator (``a and (b and c)`` parses as ``a and b and c``), and ``(x)`` is
just ``x``. Two filters that differ only in whitespace, keyword case, quoting or redundant
parentheses therefore parse to equal ASTs. Clause and item order are kept as written (no
sorting), and so are the values of a list, duplicates included.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Literal, TypeAlias

__all__ = [
    "KEYWORDS",
    "LIST_OPERATORS",
    "MAX_FILTER_LENGTH",
    "MAX_NESTING_DEPTH",
    "OPERATORS",
    "Clause",
    "FilterSyntaxError",
    "Group",
    "Node",
    "normalise_filter",
    "parse_filter",
]

MAX_FILTER_LENGTH = 4096
MAX_NESTING_DEPTH = 32
OPERATORS = ("==", "!=", ">=", "<=", ">", "<", "=in=", "=out=")
LIST_OPERATORS = frozenset({"=in=", "=out="})
KEYWORDS = frozenset({"and", "or"})

_WS = " \t\r\n"
_RESERVED = _WS + "\"'(),;=!<>\\"
_WS_RE = re.compile(r"[ \t\r\n]*")
_PATH_RE = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
# Longest match first: ">=" before ">", "<=" before "<". ASCII-only so that e.g. a dotless
# Turkish i (U+0131) cannot pass for the "i" of "=in=".
_OP_RE = re.compile(r"==|!=|>=|<=|>|<|=in=|=out=", re.IGNORECASE | re.ASCII)
_KEYWORD_RE = re.compile(r"(?:and|or)(?![A-Za-z0-9_.-])", re.IGNORECASE | re.ASCII)
_BARE_RE = re.compile(f"[^{re.escape(_RESERVED)}]+")
_SNIPPET_RE = re.compile(f"[^{re.escape(_RESERVED)}]{{1,24}}")
_DATE_LIKE_RE = re.compile(r"[0-9]{4}-")
_DATETIME_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:T([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\.[0-9]{1,9})?)?"
    r"(?:Z|[+-]([0-9]{2}):([0-9]{2}))?)?"
)

_EXPECT_OPERATOR = "an operator (" + ", ".join(OPERATORS) + ")"
_EXPECT_TERM = "a field path or '('"
_EXPECT_VALUE = "a value (bare, or quoted with \" or ')"
_EXPECT_DATETIME = (
    "a valid date (YYYY-MM-DD) or ISO 8601 time (YYYY-MM-DDThh:mm[:ss[.fff]][Z|±hh:mm])"
)


class FilterSyntaxError(ValueError):
    """A filter that is not in the language.

    ``position`` is the 0-based character offset in the original text where the problem is,
    ``expected`` a phrase for what should have been there and ``found`` what was there
    (quoted with ``repr``, or a phrase such as "the end of the filter").
    """

    def __init__(self, position: int, expected: str, found: str) -> None:
        self.position = position
        self.expected = expected
        self.found = found
        super().__init__(f"at position {position}: expected {expected}, found {found}")

    def __reduce__(self) -> tuple[type[FilterSyntaxError], tuple[int, str, str]]:
        return (type(self), (self.position, self.expected, self.found))


@dataclass(frozen=True, slots=True)
class Clause:
    """``path op value``; ``values`` holds the unquoted value(s), exactly one for plain ops."""

    path: str
    op: str  # one of OPERATORS, lower-case
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Group:
    """Two or more items joined by one keyword."""

    op: Literal["and", "or"]
    items: tuple[Node, ...]


Node: TypeAlias = Clause | Group


def parse_filter(text: str) -> Node:
    """Parse ``text`` into its canonical AST; raise :class:`FilterSyntaxError` if malformed.

    A blank filter is an error here (there is no AST for "no filter"); see
    :func:`normalise_filter`, which maps it to ``None``.
    """
    _check_characters(text)
    return _Parser(text).parse()


def normalise_filter(text: str | None) -> str | None:
    """The canonical text of a filter, or ``None`` for a missing or blank one.

    Canonical: outside quoted values no whitespace but one space on each side of ``and``/``or``;
    keywords and operators lower-case; a value bare unless it needs quotes (it is empty, holds
    whitespace or one of ``" ' ( ) , ; = ! < > \\``, is ``and``/``or`` in any case, or starts
    like a date without being a valid one), then in double quotes with ``"`` and ``\\``
    escaped; parentheses only around an ``or`` inside an ``and``. The result is in
    the upstream's syntax, ``normalise_filter(normalise_filter(x)) == normalise_filter(x)`` and
    ``parse_filter(normalise_filter(x)) == parse_filter(x)``.
    Raises :class:`FilterSyntaxError` for a malformed filter, and for one whose canonical form
    (quoting can lengthen it) would be over :data:`MAX_FILTER_LENGTH` characters.
    """
    if text is None:
        return None
    _check_characters(text)
    if not text.strip(_WS):
        return None
    canonical = _render(_Parser(text).parse())
    if len(canonical) > MAX_FILTER_LENGTH:
        raise FilterSyntaxError(
            0,
            f"a filter of at most {MAX_FILTER_LENGTH} characters once normalised",
            f"{len(canonical)} characters",
        )
    return canonical


def _check_characters(text: str) -> None:
    if len(text) > MAX_FILTER_LENGTH:
        raise FilterSyntaxError(
            MAX_FILTER_LENGTH,
            f"at most {MAX_FILTER_LENGTH} characters",
            f"{len(text)} characters",
        )
    if not text.isprintable():
        for position, char in enumerate(text):
            if not char.isprintable() and char not in _WS:
                raise FilterSyntaxError(position, "a printable character", repr(char))


def _is_valid_datetime(value: str) -> bool:
    match = _DATETIME_RE.fullmatch(value)
    if match is None:
        return False
    year, month, day, hour, minute, second, off_hour, off_minute = match.groups()
    try:
        date(int(year), int(month), int(day))
    except ValueError:
        return False
    limits = ((hour, 24), (minute, 60), (second, 60), (off_hour, 24), (off_minute, 60))
    return all(int(part) < limit for part, limit in limits if part is not None)


def _bare_problem(value: str) -> str | None:
    """Why ``value`` cannot be written bare (an "expected" phrase), or None if it can."""
    if _BARE_RE.fullmatch(value) is None or value.lower() in KEYWORDS:
        return _EXPECT_VALUE
    if _DATE_LIKE_RE.match(value) and not _is_valid_datetime(value):
        return _EXPECT_DATETIME
    return None


def _group(op: Literal["and", "or"], items: list[Node]) -> Node:
    if len(items) == 1:
        return items[0]
    flat: list[Node] = []
    for item in items:
        if isinstance(item, Group) and item.op == op:
            flat.extend(item.items)
        else:
            flat.append(item)
    return Group(op, tuple(flat))


class _Parser:
    """Recursive descent straight over the text, one compiled regex per kind of token."""

    __slots__ = ("depth", "pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    def error(self, position: int, expected: str, found: str | None = None) -> FilterSyntaxError:
        if found is None:
            if position >= len(self.text):
                found = "the end of the filter"
            else:
                snippet = _SNIPPET_RE.match(self.text, position)
                found = repr(snippet.group() if snippet else self.text[position])
        return FilterSyntaxError(position, expected, found)

    def skip_ws(self) -> None:
        match = _WS_RE.match(self.text, self.pos)
        assert match is not None  # the pattern matches the empty string
        self.pos = match.end()

    def peek(self) -> str:
        return self.text[self.pos : self.pos + 1]

    def parse(self) -> Node:
        node = self.or_expr()
        self.skip_ws()
        if self.pos < len(self.text):
            raise self.error(self.pos, "'and', 'or' or the end of the filter")
        return node

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while self.keyword("or"):
            items.append(self.and_expr())
        return _group("or", items)

    def and_expr(self) -> Node:
        items = [self.term()]
        while self.keyword("and"):
            items.append(self.term())
        return _group("and", items)

    def keyword(self, word: str) -> bool:
        """Consume ``word`` (and the whitespace around it) if it comes next."""
        self.skip_ws()
        match = _KEYWORD_RE.match(self.text, self.pos)
        if match is None or match.group().lower() != word:
            return False
        if self.text[self.pos - 1] not in _WS + ")":
            raise self.error(self.pos, f"a space before '{word}'")
        self.pos = match.end()
        return True

    def term(self) -> Node:
        self.skip_ws()
        if self.peek() != "(":
            return self.clause()
        if self.depth >= MAX_NESTING_DEPTH:
            raise self.error(self.pos, f"at most {MAX_NESTING_DEPTH} levels of nested parentheses")
        self.depth += 1
        self.pos += 1
        node = self.or_expr()
        self.skip_ws()
        if self.peek() != ")":
            raise self.error(self.pos, "'and', 'or' or ')'")
        self.pos += 1
        self.depth -= 1
        return node

    def clause(self) -> Clause:
        match = _PATH_RE.match(self.text, self.pos)
        if match is None or match.group().lower() in KEYWORDS:
            raise self.error(self.pos, _EXPECT_TERM)
        path = match.group()
        self.pos = match.end()
        if self.peek() == ".":
            raise self.error(self.pos + 1, "a path segment (letters, digits, '_' or '-')")
        self.skip_ws()
        match = _OP_RE.match(self.text, self.pos)
        if match is None:
            raise self.error(self.pos, _EXPECT_OPERATOR)
        op = match.group().lower()
        self.pos = match.end()
        self.skip_ws()
        if op not in LIST_OPERATORS:
            return Clause(path, op, (self.value(),))
        if self.peek() != "(":
            raise self.error(self.pos, f"'(' opening the list of values of {op}")
        self.pos += 1
        values = []
        while True:
            self.skip_ws()
            values.append(self.value())
            self.skip_ws()
            char = self.peek()
            self.pos += 1
            if char == ")":
                return Clause(path, op, tuple(values))
            if char != ",":
                raise self.error(self.pos - 1, "',' or ')'")

    def value(self) -> str:
        if self.peek() in ('"', "'"):
            return self.quoted()
        match = _BARE_RE.match(self.text, self.pos)
        if match is None:
            raise self.error(self.pos, _EXPECT_VALUE)
        value = match.group()
        problem = _bare_problem(value)
        if problem is not None:
            raise self.error(self.pos, problem, repr(value))
        self.pos = match.end()
        return value

    def quoted(self) -> str:
        text, start = self.text, self.pos
        quote = text[start]
        chars: list[str] = []
        i = start + 1
        while i < len(text):
            char = text[i]
            if char == quote:
                self.pos = i + 1
                return "".join(chars)
            if char == "\\":
                i += 1
                char = text[i : i + 1]
                if char not in ('"', "'", "\\"):
                    raise self.error(i, "an escaped quote or backslash (\\\", \\' or \\\\)")
            elif not char.isprintable():
                raise self.error(i, "a printable character (no tabs or line breaks in quotes)")
            chars.append(char)
            i += 1
        raise self.error(i, f"{quote!r} closing the value that opens at position {start}")


def _render(node: Node, inside_and: bool = False) -> str:
    if isinstance(node, Clause):
        if node.op in LIST_OPERATORS:
            return f"{node.path}{node.op}({','.join(map(_render_value, node.values))})"
        return f"{node.path}{node.op}{_render_value(node.values[0])}"
    text = f" {node.op} ".join(_render(item, node.op == "and") for item in node.items)
    return f"({text})" if inside_and and node.op == "or" else text


def _render_value(value: str) -> str:
    if _bare_problem(value) is None:
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
