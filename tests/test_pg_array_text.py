"""PostgreSQL array text: the comma-split fast path of ``parse_array`` gives the general parser's list (sans-io)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headrace.relay.sources._pgtypes import _parse_array_general, parse_array

# element texts as PostgreSQL prints them unquoted, plus the odd ones: NULL, blanks, empty
_atom = st.one_of(
    st.text(st.characters(blacklist_characters='{},"\\'), max_size=8),
    st.sampled_from(["NULL", " NULL ", "", " ", "1", "-2.5", "2024-01-01", "t", "\t x \n"]),
)


@st.composite
def array_texts(draw: st.DrawFn) -> str:
    if draw(st.booleans()):  # the fast path's shape
        return "{" + ",".join(draw(st.lists(_atom, max_size=6))) + "}"
    # anything else PostgreSQL may print: quoted elements, escapes, nesting, bounds
    item = st.one_of(_atom, _atom.map(lambda a: '"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"'))
    inner = ",".join(draw(st.lists(item, max_size=4)))
    return draw(st.sampled_from(["{" + inner + "}", "{{" + inner + "},{" + inner + "}}", "[0:1]={" + inner + "}"]))


def _outcome(f: Any, text: str) -> Any:
    try:
        return f(text, lambda s: ("v", s))
    except (ValueError, IndexError) as exc:
        return type(exc)


@given(array_texts())
def test_fast_path_equals_the_general_parser(text: str) -> None:
    assert _outcome(parse_array, text) == _outcome(_parse_array_general, text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{}", []),
        ("{1,NULL,3}", [1, None, 3]),
        ("{ 1 , 2 }", [1, 2]),
        ('{1,"2"}', [1, 2]),
        ("{{1,2},{3,4}}", [[1, 2], [3, 4]]),
    ],
)
def test_known_texts(text: str, expected: list[Any]) -> None:
    assert parse_array(text, int) == expected
