"""The export filter language: one test per promise of app.upstream.filters."""

from __future__ import annotations

import pickle
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.upstream.filters import (
    MAX_FILTER_LENGTH,
    MAX_NESTING_DEPTH,
    OPERATORS,
    Clause,
    FilterSyntaxError,
    Group,
    Node,
    normalise_filter,
    parse_filter,
)


def c(path: str, op: str, *values: str) -> Clause:
    return Clause(path, op, values)


def and_(*items: Node) -> Group:
    return Group("and", items)


def or_(*items: Node) -> Group:
    return Group("or", items)


# --- valid filters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "created_time>=2020-10-10 and event_type==agreed",
            and_(c("created_time", ">=", "2020-10-10"), c("event_type", "==", "agreed")),
        ),
        ("created_time>=2020-10-10", c("created_time", ">=", "2020-10-10")),
        ("event_type==agreed", c("event_type", "==", "agreed")),
        (
            "created_time>=2020-07-21T15:34:30.051Z",
            c("created_time", ">=", "2020-07-21T15:34:30.051Z"),
        ),
        (
            "connection_data.remote_address==203.0.113.7",
            c("connection_data.remote_address", "==", "203.0.113.7"),
        ),
        ("custom_data.vip==true", c("custom_data.vip", "==", "true")),
    ],
)
def test_upstream_examples_parse(text: str, expected: Node) -> None:
    assert parse_filter(text) == expected


def test_upstream_example_normalises_to_itself() -> None:
    text = "created_time>=2020-10-10 and event_type==agreed"
    assert normalise_filter(text) == text


@pytest.mark.parametrize("op", OPERATORS)
def test_each_operator_parses(op: str) -> None:
    value = "(x,y)" if op in ("=in=", "=out=") else "x"
    expected = ("x", "y") if op in ("=in=", "=out=") else ("x",)
    assert parse_filter(f"signer_id{op}{value}") == Clause("signer_id", op, expected)


def test_list_operators_are_case_insensitive_and_normalise_to_lower_case() -> None:
    assert parse_filter("a=IN=(1) and b=Out=(2)") == and_(c("a", "=in=", "1"), c("b", "=out=", "2"))
    assert normalise_filter("a=IN=(1)") == "a=in=(1)"


def test_path_segments_allow_letters_digits_underscore_and_hyphen() -> None:
    assert parse_filter("custom_data.page-2.x_1==v") == c("custom_data.page-2.x_1", "==", "v")


def test_path_case_is_kept() -> None:
    assert normalise_filter("Custom_Data.VIP==Yes") == "Custom_Data.VIP==Yes"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('a=="hello world"', "hello world"),
        ("a=='hello world'", "hello world"),
        (r'a=="say \"hi\""', 'say "hi"'),
        (r"a=='it\'s'", "it's"),
        (r'a=="back\\slash"', "back\\slash"),
        (r"a=='mixed \" and \''", "mixed \" and '"),
        ('a==""', ""),
        ('a=="(a,b) == c; d"', "(a,b) == c; d"),
        ('a=="and"', "and"),
        ('a=="2020-13-45"', "2020-13-45"),
        ('a=="héllo wörld ✓"', "héllo wörld ✓"),
    ],
)
def test_quoted_values_are_unquoted_and_unescaped(text: str, value: str) -> None:
    assert parse_filter(text) == c("a", "==", value)


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("event_type=in=(agreed,disagreed)", ("agreed", "disagreed")),
        ("event_type=in=( agreed , 'dis agreed' ,\"x,y\" )", ("agreed", "dis agreed", "x,y")),
        ("event_type=in=(agreed)", ("agreed",)),
        ("event_type=in=(a,a)", ("a", "a")),
        ("event_type =in= (agreed)", ("agreed",)),
    ],
)
def test_in_lists_parse_with_order_and_duplicates_kept(text: str, values: tuple[str, ...]) -> None:
    assert parse_filter(text) == Clause("event_type", "=in=", values)


def test_out_list_parses() -> None:
    assert parse_filter("event_type=out=(sent,'re minded')") == c(
        "event_type", "=out=", "sent", "re minded"
    )


@pytest.mark.parametrize(
    "value",
    [
        "2020-10-10",
        "2020-02-29",
        "2020-07-21T15:34",
        "2020-07-21T15:34:30",
        "2020-07-21T15:34:30.051Z",
        "2020-07-21T15:34:30.123456789Z",
        "2020-07-21T15:34:30+02:00",
        "2020-07-21T23:59:59-11:30",
    ],
)
def test_valid_dates_and_times_are_bare_values(value: str) -> None:
    assert parse_filter(f"created_time>={value}") == c("created_time", ">=", value)


def test_keywords_are_case_insensitive() -> None:
    assert parse_filter("a==1 AND b==2 Or c==3") == or_(
        and_(c("a", "==", "1"), c("b", "==", "2")), c("c", "==", "3")
    )


def test_and_binds_tighter_than_or() -> None:
    a, b, x = c("a", "==", "1"), c("b", "==", "2"), c("c", "==", "3")
    assert parse_filter("a==1 or b==2 and c==3") == or_(a, and_(b, x))
    assert parse_filter("a==1 and b==2 or c==3") == or_(and_(a, b), x)


def test_parentheses_group() -> None:
    a, b, x = c("a", "==", "1"), c("b", "==", "2"), c("c", "==", "3")
    assert parse_filter("(a==1 or b==2) and c==3") == and_(or_(a, b), x)
    assert parse_filter("( ( a==1 ) )") == a


def test_same_keyword_groups_are_flattened() -> None:
    a, b, x = c("a", "==", "1"), c("b", "==", "2"), c("c", "==", "3")
    assert parse_filter("a==1 and (b==2 and c==3)") == and_(a, b, x)
    assert parse_filter("(a==1 or b==2) or c==3") == or_(a, b, x)


def test_keywords_may_touch_parentheses() -> None:
    assert parse_filter("(a==1)or(b==2)") == or_(c("a", "==", "1"), c("b", "==", "2"))


def test_whitespace_around_operators_and_tokens_is_allowed() -> None:
    assert parse_filter(" \t a\n>=\r\n1 \n") == c("a", ">=", "1")


def test_keyword_words_are_fine_inside_longer_paths_and_values() -> None:
    assert parse_filter("android==orange") == c("android", "==", "orange")
    assert parse_filter("and.or==andor") == c("and.or", "==", "andor")


# --- malformed filters ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "position", "expected"),
    [
        ("event_type==", 12, "a value"),
        ("event_type== and b==1", 13, "a value"),
        ("event_type agreed", 11, "an operator"),
        ("event_type", 10, "an operator"),
        ("event_type=agreed", 10, "an operator"),
        ("event_type=>agreed", 10, "an operator"),
        ("event_type===agreed", 12, "a value"),
        ("event_type=~agreed", 10, "an operator"),
        ("event_type=gt=1", 10, "an operator"),
        ("a==1 and", 8, "a field path or '('"),
        ("a==1 and ", 9, "a field path or '('"),
        ("and a==1", 0, "a field path or '('"),
        ("a==1 or or b==2", 8, "a field path or '('"),
        ("a==1 and and==2", 9, "a field path or '('"),
        ("a==1 and (b==2", 14, "'and', 'or' or ')'"),
        ("(a==1", 5, "'and', 'or' or ')'"),
        ("a==1)", 4, "'and', 'or' or the end of the filter"),
        ("()", 1, "a field path or '('"),
        ("a==1 b==2", 5, "'and', 'or' or the end of the filter"),
        ("a==1 andb==2", 5, "'and', 'or' or the end of the filter"),
        ("a==1 && b==2", 5, "'and', 'or' or the end of the filter"),
        ("a==1;b==2", 4, "'and', 'or' or the end of the filter"),
        ("a==b,c", 4, "'and', 'or' or the end of the filter"),
        ("a==b(c)", 4, "'and', 'or' or the end of the filter"),
        ('a=="x"and b==1', 6, "a space before 'and'"),
        ('a=="x', 5, "'\"' closing the value that opens at position 3"),
        ("a=='x", 5, '"\'" closing the value that opens at position 3'),
        ('a=="x\\"', 7, "'\"' closing the value"),
        ('a=="x\\n"', 6, "an escaped quote or backslash"),
        ('a=="x\\', 6, "an escaped quote or backslash"),
        ("a==x'y'", 4, "'and', 'or' or the end of the filter"),
        ("a==(x)", 3, "a value"),
        ("a==and", 3, "a value"),
        ("a==OR", 3, "a value"),
        ("a==x=y", 4, "'and', 'or' or the end of the filter"),
        ("a==2020-13-45", 3, "a valid date"),
        ("a==2020-02-30", 3, "a valid date"),
        ("a==2021-02-29", 3, "a valid date"),
        ("a==2020-1-1", 3, "a valid date"),
        ("a==2020-07-21T25:00:00Z", 3, "a valid date"),
        ("a==2020-07-21T15:60Z", 3, "a valid date"),
        ("a==2020-07-21T15:34:61Z", 3, "a valid date"),
        ("a==2020-07-21T15:34:30+25:00", 3, "a valid date"),
        ("a==2020-07-21 15:34", 14, "'and', 'or' or the end of the filter"),
        ("a==2020-07-21t15:34Z", 3, "a valid date"),
        ("a=in=(2020-13-01)", 6, "a valid date"),
        ("a=in=()", 6, "a value"),
        ("a=in=( )", 7, "a value"),
        ("a=in=(x,)", 8, "a value"),
        ("a=in=(,x)", 6, "a value"),
        ("a=in=(x y)", 8, "',' or ')'"),
        ("a=in=(x", 7, "',' or ')'"),
        ("a=in=x", 5, "'(' opening the list of values of =in="),
        ("a=out=", 6, "'(' opening the list of values of =out="),
        ("a..b==1", 2, "a path segment"),
        ("a.==1", 2, "a path segment"),
        (".a==1", 0, "a field path or '('"),
        ("a$b==1", 1, "an operator"),
        ("é==1", 0, "a field path or '('"),
        ("and==1", 0, "a field path or '('"),
        ("a==1 or (", 9, "a field path or '('"),
        ("", 0, "a field path or '('"),
        ("   ", 3, "a field path or '('"),
    ],
)
def test_malformed_filters_raise_with_position_and_expectation(
    text: str, position: int, expected: str
) -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        parse_filter(text)
    assert caught.value.position == position
    assert caught.value.expected.startswith(expected)


@pytest.mark.parametrize(
    ("text", "position", "found"),
    [
        ("a==b\x00", 4, "'\\x00'"),
        ("a\x1b==b", 1, "'\\x1b'"),
        ("a==b\u200b", 4, "'\\u200b'"),
        ("a==b\u00a0and c==d", 4, "'\\xa0'"),
        ('a=="x\u202ey"', 5, "'\\u202e'"),
        ("a==b\x7f", 4, "'\\x7f'"),
    ],
)
def test_non_printable_characters_are_rejected(text: str, position: int, found: str) -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        parse_filter(text)
    assert (caught.value.position, caught.value.expected) == (position, "a printable character")
    assert caught.value.found == found


@pytest.mark.parametrize("char", ["\t", "\n", "\r"])
def test_tabs_and_line_breaks_are_rejected_inside_quotes(char: str) -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        parse_filter(f'a=="x{char}y"')
    assert caught.value.position == 5
    assert caught.value.expected.startswith("a printable character")


def test_too_long_filter_is_rejected_at_position_4096() -> None:
    text = "a==" + "x" * (MAX_FILTER_LENGTH - 2)
    with pytest.raises(FilterSyntaxError) as caught:
        parse_filter(text)
    assert caught.value.position == MAX_FILTER_LENGTH == 4096
    assert caught.value.expected == "at most 4096 characters"
    assert str(caught.value) == (
        "at position 4096: expected at most 4096 characters, found 4097 characters"
    )
    with pytest.raises(FilterSyntaxError):
        normalise_filter(text)


def test_filter_of_exactly_4096_characters_is_accepted() -> None:
    assert parse_filter("a==" + "x" * (MAX_FILTER_LENGTH - 3)) == c("a", "==", "x" * 4093)


def test_too_deep_nesting_is_rejected_at_the_first_paren_too_many() -> None:
    assert MAX_NESTING_DEPTH == 32
    ok = "(" * 32 + "a==1" + ")" * 32
    assert parse_filter(ok) == c("a", "==", "1")
    with pytest.raises(FilterSyntaxError) as caught:
        parse_filter("(" * 33 + "a==1" + ")" * 33)
    assert caught.value.position == 32
    assert caught.value.expected == "at most 32 levels of nested parentheses"


def test_deep_nesting_never_overflows_the_stack() -> None:
    with pytest.raises(FilterSyntaxError):
        parse_filter("(" * MAX_FILTER_LENGTH)


def test_error_message_is_one_sentence_with_position_expected_and_found() -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        parse_filter("event_type = agreed")
    assert str(caught.value) == (
        "at position 11: expected an operator (==, !=, >=, <=, >, <, =in=, =out=), found '='"
    )
    assert isinstance(caught.value, ValueError)


def test_error_survives_pickling() -> None:
    error = FilterSyntaxError(3, "a value", "'='")
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert (copy.position, copy.expected, copy.found, str(copy)) == (
        3,
        "a value",
        "'='",
        str(error),
    )


# --- normalisation -------------------------------------------------------------------------


@pytest.mark.parametrize("text", [None, "", " ", " \t\r\n "])
def test_missing_or_blank_filter_normalises_to_none(text: str | None) -> None:
    assert normalise_filter(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "created_time>=2020-10-10 and event_type==agreed",
        "created_time >= 2020-10-10 and event_type == agreed",
        "  created_time>=2020-10-10\tand\n\nevent_type==agreed  ",
        "created_time>=2020-10-10 AND event_type==agreed",
        "created_time>='2020-10-10' And event_type==\"agreed\"",
        "(created_time>=2020-10-10) and ((event_type==agreed))",
        "(created_time>=2020-10-10)and(event_type==agreed)",
    ],
)
def test_whitespace_case_quoting_and_paren_variants_collapse_to_one_form(text: str) -> None:
    assert normalise_filter(text) == "created_time>=2020-10-10 and event_type==agreed"


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("a==1 AND b==2 OR c==3", "a==1 and b==2 or c==3"),
        ("a==1 or (b==2 and c==3)", "a==1 or b==2 and c==3"),
        ("(a==1 or b==2) and c==3", "(a==1 or b==2) and c==3"),
        ("a==1 and (b==2 and (c==3 or (d==4)))", "a==1 and b==2 and (c==3 or d==4)"),
        ("a =in= ( x , 'y z' )", 'a=in=(x,"y z")'),
        ("a=='plain'", "a==plain"),
        ("a=='say \"hi\"'", r'a=="say \"hi\""'),
        (r"a=='back\\slash'", r'a=="back\\slash"'),
        ("a=='x,y'", 'a=="x,y"'),
        ("a=='x=y'", 'a=="x=y"'),
        ("a=='(x)'", 'a=="(x)"'),
        ("a=='x;y'", 'a=="x;y"'),
        ("a==''", 'a==""'),
        ("a=='AND'", 'a=="AND"'),
        ("a=='2020-13-45'", 'a=="2020-13-45"'),
        ("a=='2020-07-21T15:34:30+02:00'", "a==2020-07-21T15:34:30+02:00"),
        ("a=='héllo'", "a==héllo"),
    ],
)
def test_normalisation_examples(text: str, canonical: str) -> None:
    assert normalise_filter(text) == canonical


def test_normalisation_that_would_exceed_the_length_bound_is_an_error() -> None:
    text = "a=='" + '"' * (MAX_FILTER_LENGTH - 5) + "'"  # every " gains a backslash
    assert len(text) == MAX_FILTER_LENGTH
    parse_filter(text)
    with pytest.raises(FilterSyntaxError) as caught:
        normalise_filter(text)
    assert caught.value.expected == "a filter of at most 4096 characters once normalised"


# --- properties ----------------------------------------------------------------------------

_PROPERTY_SETTINGS = settings(max_examples=300, deadline=None)
_KEYWORD = re.compile(r"(?i)(?:and|or)")
_GRAMMAR_ALPHABET = "ab_.-019:TZ+=!<>()'\",;\\ \t\n" + "AND or é\x00\u200b"

ws0 = st.sampled_from(["", "", " ", "  ", "\t", "\n", " \r\n"])
ws1 = st.sampled_from([" ", " ", "  ", "\t", "\n", " \r\n"])
_PATH_CHARS = "abcxyzAZ0189_-"
paths = st.lists(st.text(_PATH_CHARS, min_size=1, max_size=5), min_size=1, max_size=3).map(".".join)
# Values that may be written bare: no reserved characters, not a keyword, not date-like...
plain_values = st.text("abnrdoANDOR0129_.:+*@/-é", min_size=1, max_size=8).filter(
    lambda v: not _KEYWORD.fullmatch(v) and not re.match(r"[0-9]{4}-", v)
)
# ...valid dates and ISO times...
date_values = st.one_of(
    st.dates().map(lambda d: f"{d.year:04d}-{d.month:02d}-{d.day:02d}"),
    st.builds(
        lambda d, z: f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d:%H:%M:%S}.{d:%f}{z}",
        st.datetimes(),
        st.sampled_from(["Z", "+02:00", "-11:30", ""]),
    ),
)
# ...and any printable text, which must always be quoted.
text_values = st.text(
    st.characters(
        exclude_categories=["Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"], include_characters=" "
    ),
    max_size=8,
)


_VALUE_KINDS = st.sampled_from(["plain", "date", "text"])
_OPERATOR = st.sampled_from(OPERATORS)
_KEYWORD_OP = st.sampled_from(["and", "or"])
_LIST_LENGTH = st.integers(1, 3)
_GROUP_SIZE = st.integers(2, 3)
_BRANCH = st.integers(0, 2)
_BOOL = st.booleans()
_QUOTE = st.sampled_from(['"', "'"])
_EXTRA_PARENS = st.integers(0, 5)
_CASINGS = {
    word: st.sampled_from([word, word, word.upper(), word.title()])
    for word in ("and", "or", *OPERATORS)
}


def _canonical_group(op: str, items: list[Node]) -> Node:
    """A group with same-keyword children spliced in: the canonical AST shape."""
    flat: list[Node] = []
    for item in items:
        flat.extend(item.items if isinstance(item, Group) and item.op == op else [item])
    return Group("and" if op == "and" else "or", tuple(flat))


class _FilterBuilder:
    """Draws a canonical AST, then renders it with random whitespace, case, quotes and parens."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.bare_ok: set[str] = set()  # values that may be written without quotes

    def value(self) -> str:
        kind = self.draw(_VALUE_KINDS)
        if kind == "text":
            return self.draw(text_values)
        value = self.draw(plain_values if kind == "plain" else date_values)
        self.bare_ok.add(value)
        return value

    def tree(self, depth: int = 0) -> Node:
        if depth == 3 or self.draw(_BRANCH) < (1 if depth == 0 else 2):
            op = self.draw(_OPERATOR)
            count = self.draw(_LIST_LENGTH) if op in ("=in=", "=out=") else 1
            return Clause(self.draw(paths), op, tuple(self.value() for _ in range(count)))
        op = self.draw(_KEYWORD_OP)
        return _canonical_group(op, [self.tree(depth + 1) for _ in range(self.draw(_GROUP_SIZE))])

    def render_value(self, value: str) -> str:
        if value in self.bare_ok and self.draw(_BOOL):
            return value
        quote = self.draw(_QUOTE)
        escaped = value.replace("\\", "\\\\").replace(quote, "\\" + quote)
        if self.draw(_BOOL):  # needless escapes of the other quote are allowed too
            other = "'" if quote == '"' else '"'
            escaped = escaped.replace(other, "\\" + other)
        return quote + escaped + quote

    def render(self, node: Node, parent: str | None = None) -> str:
        draw = self.draw
        if isinstance(node, Clause):
            text = node.path + draw(ws0) + draw(_CASINGS[node.op]) + draw(ws0)
            rendered = [self.render_value(value) for value in node.values]
            if node.op in ("=in=", "=out="):
                separator = draw(ws0) + "," + draw(ws0)
                text += "(" + draw(ws0) + separator.join(rendered) + draw(ws0) + ")"
            else:
                text += rendered[0]
        else:
            parts = [self.render(item, node.op) for item in node.items]
            text = parts[0]
            for part in parts[1:]:
                text += draw(ws1) + draw(_CASINGS[node.op]) + draw(ws1) + part
        needs_parens = parent == "and" and isinstance(node, Group) and node.op == "or"
        if needs_parens or draw(_EXTRA_PARENS) == 0:
            text = "(" + draw(ws0) + text + draw(ws0) + ")"
        return text


@st.composite
def valid_filters(draw: st.DrawFn) -> tuple[Node, str, str]:
    """An AST and two independent renderings of it."""
    builder = _FilterBuilder(draw)
    tree = builder.tree()
    first = draw(ws0) + builder.render(tree) + draw(ws0)
    second = draw(ws0) + builder.render(tree) + draw(ws0)
    return tree, first, second


_MUTATION = st.sampled_from(["insert", "delete", "replace"])
_GRAMMAR_CHAR = st.sampled_from(_GRAMMAR_ALPHABET)


@st.composite
def mutated_filters(draw: st.DrawFn) -> str:
    """A valid filter with a few characters inserted, deleted or replaced."""
    _, text, _ = draw(_VALID_FILTERS)
    for _ in range(draw(_LIST_LENGTH)):
        i = draw(st.integers(0, len(text)))
        action = draw(_MUTATION)
        char = draw(_GRAMMAR_CHAR)
        if action == "insert":
            text = text[:i] + char + text[i:]
        elif action == "delete":
            text = text[:i] + text[i + 1 :]
        else:
            text = text[:i] + char + text[i + 1 :]
    return text


_VALID_FILTERS = valid_filters()
_MUTATED_FILTERS = mutated_filters()


@_PROPERTY_SETTINGS
@given(
    st.one_of(
        st.text(),
        st.text(_GRAMMAR_ALPHABET, max_size=40),
        _MUTATED_FILTERS,
        st.integers(0, 40).map(lambda n: "(" * n + "a==1" + ")" * n),
    )
)
def test_any_text_parses_or_raises_filter_syntax_error(text: str) -> None:
    error: FilterSyntaxError | None = None
    try:
        parse_filter(text)
    except FilterSyntaxError as caught:
        error = caught
    if error is None:
        canonical = normalise_filter(text)
        assert canonical is not None
        assert parse_filter(canonical) == parse_filter(text)
        return
    assert 0 <= error.position <= len(text)
    assert str(error).startswith(f"at position {error.position}: expected ")
    if text.strip(" \t\r\n"):
        with pytest.raises(FilterSyntaxError):
            normalise_filter(text)
    else:
        assert normalise_filter(text) is None


@_PROPERTY_SETTINGS
@given(_VALID_FILTERS)
def test_valid_filters_parse_to_their_ast(case: tuple[Node, str, str]) -> None:
    tree, text, _ = case
    assert parse_filter(text) == tree


@_PROPERTY_SETTINGS
@given(_VALID_FILTERS)
def test_normalise_is_idempotent_and_keeps_the_meaning(case: tuple[Node, str, str]) -> None:
    _, text, _ = case
    canonical = normalise_filter(text)
    assert canonical is not None
    assert normalise_filter(canonical) == canonical
    assert parse_filter(canonical) == parse_filter(text)
    assert not any(ch in canonical for ch in "\t\r\n")  # text values never hold these


@_PROPERTY_SETTINGS
@given(_VALID_FILTERS)
def test_renderings_of_the_same_filter_normalise_to_the_same_text(
    case: tuple[Node, str, str],
) -> None:
    _, first, second = case
    assert normalise_filter(first) == normalise_filter(second)
