"""Validation of names that become path components (streams, data types, sources, tables).

A name that could escape its directory (``..``, a slash, an absolute path, a NUL byte, control
characters) is refused with :class:`~headrace.errors.InvalidInput`, before anything is written.
Names are matched whole (``re.fullmatch``): ``$`` would let a trailing newline through.
"""

from __future__ import annotations

import re

from .errors import InvalidInput

_SAFE_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-=@+]{0,199}")
_SAFE_STREAM = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-=@+/]{0,1023}")


def check_component(kind: str, value: str) -> str:
    """Return ``value`` if it is safe as one path component (a data type, a source), else raise."""
    if not isinstance(value, str) or not _SAFE_COMPONENT.fullmatch(value) or value in {".", ".."}:
        raise InvalidInput(
            f"bad_{kind}",
            f"{kind} {value!r:.200} is not allowed: use letters, digits and _ . - = @ + "
            "(at most 200, not starting with a dot)",
        )
    return value


def check_stream(value: str) -> str:
    """Return ``value`` if it is a safe stream name (relative, slash-separated, no ``..``), else raise."""
    bad = (
        not isinstance(value, str)
        or not _SAFE_STREAM.fullmatch(value)
        or any(part in {"", ".", ".."} for part in value.split("/"))
    )
    if bad:
        raise InvalidInput(
            "bad_stream",
            f"stream {value!r:.200} is not allowed: a relative name of letters, digits, _ . - = @ + and "
            "single slashes, without '..' parts or a leading slash",
        )
    return value
