"""Shared pieces of the HTTP fuzz tests: hostile values as hypothesis strategies, and a request runner.

The runner sends requests on one keep-alive ``httpx.Client`` to a real daemon and checks the rules
every surface must keep: never a 5xx (nor a dropped connection), a 4xx always carries the JSON
error body ``{"error": …, "detail": …}``. Hypothesis draws *lists* of requests (one example is a
batch) so that its own per-example cost does not bound the request rate; :func:`run_for` sizes the
number of examples to a time budget after measuring the rate on a first small run, with a floor of
``at_least`` requests.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MAX_LONG = (1 << 63) - 1

#: Any character, lone surrogates and NUL included (httpx percent-encodes what a URL cannot hold).
ANY_CHAR = st.characters(codec=None, exclude_categories=())
#: Strings that broke, or could break, a daemon somewhere: surrogates, NUL, newlines, bidi, long.
NASTY_STRINGS = [
    "\ud800",
    "a\udfffb",
    "\x00",
    "a\x00b",
    "\n",
    "x\n",
    "\r\n",
    "\u202e",
    "é",
    "\U0001f600",
    "%00",
    "%ff",
    "../",
    "..",
    ".",
    " ",
    "\t",
    "a" * 300,
    "\\",
    '"',
    "'",
    "{}",
]
TEXT = st.one_of(
    st.text(ANY_CHAR, max_size=24),
    st.sampled_from(NASTY_STRINGS),
    st.builds(lambda a, n, b: a + n + b, st.text(max_size=6), st.sampled_from(NASTY_STRINGS), st.text(max_size=6)),
)
#: Strings a careless integer parser accepts or chokes on.
INT_TEXT = st.one_of(
    st.integers(-(1 << 70), 1 << 70).map(str),
    st.integers(0, 1 << 66).map(str),
    st.sampled_from(
        [
            "",
            " ",
            "0",
            "-0",
            "+1",
            " 1",
            "1 ",
            "1_000",
            "0x10",
            "1e3",
            "1.0",
            "nan",
            "inf",
            "-inf",
            "Infinity",
            "١٢",  # Arabic-Indic digits: int() takes them
            "１２",  # full-width digits
            "9" * 5000,  # past Python's int() digit limit
            "18446744073709551615",
            "18446744073709551616",
            "9223372036854775807",
            "9223372036854775808",
            "\x00",
            "1\n",
            "%00",
        ]
    ),
    TEXT,
)
JSON_SCALAR = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(1 << 70), 1 << 70),
    st.floats(),
    TEXT,
)
JSON = st.recursive(
    JSON_SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=8
)


def quote_text(text: str, safe: str = "") -> str:
    """``text`` percent-encoded as UTF-8, lone surrogates included (as a hostile client could send them)."""
    return urllib.parse.quote(text.encode("utf-8", "surrogatepass"), safe=safe)


def json_bytes(value: Any) -> bytes:
    """``value`` as JSON text the way a hostile client might write it (NaN, lone surrogates kept)."""
    return json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")


#: Bodies no JSON parser should take lightly.
NASTY_BODIES = st.one_of(
    st.binary(max_size=80),
    st.sampled_from(
        [
            b"",
            b"[" * 100_000,
            b'{"a":' * 50_000,
            b"\xff\xfe{}",
            b'{"consumer": "\xff"}',
            b'"\\ud800"',
            b"1" * 10_000,
            b"NaN",
            b"-Infinity",
            b"null",
            b"[]",
            b"{}",
        ]
    ),
    st.builds(lambda v, cut: json_bytes(v)[:cut], JSON, st.integers(0, 40)),
)


@dataclass
class Fuzzer:
    """Sends requests to ``base`` and checks the rules every surface keeps; counts what it sent."""

    base: str
    headers: dict[str, str] = field(default_factory=dict)
    client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))
    sent: int = 0
    by_route: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)

    def send(
        self,
        route: str,
        method: str,
        path: str,
        *,
        params: list[tuple[str, str]] | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One request; asserts no 5xx and a JSON error body on a 4xx; returns the response."""
        url = self.base + quote_text(path, safe="/%")
        if params:
            url += "?" + "&".join(f"{quote_text(k)}={quote_text(v)}" for k, v in params)
        try:
            r = self.client.request(method, url, content=content, headers={**self.headers, **(headers or {})})
        except httpx.HTTPError as exc:
            raise AssertionError(f"{method} {path} {params!r:.300} {content!r:.300}: no answer: {exc!r}") from exc
        self.sent += 1
        self.by_route[route] += 1
        self.by_status[r.status_code] += 1
        what = f"{method} {path} params={params!r:.300} body={content!r:.300} -> {r.status_code} {r.text[:300]}"
        assert r.status_code < 500, what
        if (400 <= r.status_code < 500 and r.status_code not in (404, 405)) or (
            r.status_code == 404 and r.text[:1] == "{"
        ):
            body = r.json()
            assert isinstance(body, dict) and body.get("error") and "detail" in body, what
        return r

    def close(self) -> None:
        self.client.close()

    def summary(self) -> str:
        return f"{self.sent} requests; by route {dict(self.by_route)}; by status {dict(sorted(self.by_status.items()))}"


def budget(seconds: float, at_least: int) -> tuple[float, int]:
    """``(seconds, at_least)`` of a default-run fuzz test, overridable by ``FUZZ_SECONDS`` / ``FUZZ_AT_LEAST``."""
    return float(os.environ.get("FUZZ_SECONDS", seconds)), int(os.environ.get("FUZZ_AT_LEAST", at_least))


def run_for(
    strategy: st.SearchStrategy[Any],
    case: Callable[[Any], None],
    fuzzer: Fuzzer,
    *,
    seconds: float,
    at_least: int,
    per_example: float,
) -> None:
    """Run ``case`` on examples of ``strategy`` for about ``seconds``, and until ``at_least`` requests.

    ``per_example`` is the mean number of requests one example sends (to size the runs).
    """

    def run(examples: int) -> None:
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(strategy)
        def one(value: Any) -> None:
            case(value)

        one()

    started = time.monotonic()
    run(30)
    rate = fuzzer.sent / max(time.monotonic() - started, 1e-3)
    needed = max((seconds - (time.monotonic() - started)) * rate, at_least - fuzzer.sent)
    run(max(int(needed / per_example) + 1, 20))
    while fuzzer.sent < at_least:  # hypothesis may stop early (e.g. a small search space): top up
        run(max(int((at_least - fuzzer.sent) / per_example) + 1, 20))
