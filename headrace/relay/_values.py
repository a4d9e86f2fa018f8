"""Python value types for database values that Python's own types cannot hold exactly (sans-io).

* :class:`Interval` — a SQL interval as its three independent parts (months, days, microseconds), the
  way PostgreSQL stores it: ``interval '1 month'`` is not ``interval '30 days'``, and
  ``interval '178000000 years'`` does not fit a :class:`datetime.timedelta`. On the wire an interval is
  its ISO 8601 text (PostgreSQL's ``IntervalStyle=iso_8601`` output); :meth:`Interval.from_iso` and
  :meth:`Interval.__str__` convert both ways.
* :data:`JSON_NULL` — a JSON ``null`` stored in a JSON column, as distinct from SQL ``NULL`` (``None``).

The rule for everything else (dates, times and numbers outside Python's range) is in
``docs/type-mapping.md``: such a value travels as the database's own text.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

__all__ = ["JSON_NULL", "Interval", "JsonNull"]

_US_PER_DAY: Final = 86_400_000_000
_US_PER_HOUR: Final = 3_600_000_000
_US_PER_MINUTE: Final = 60_000_000

_ISO = re.compile(
    r"^P(?!$)(?:(?P<y>[-+]?\d+)Y)?(?:(?P<mo>[-+]?\d+)M)?(?:(?P<w>[-+]?\d+)W)?(?:(?P<d>[-+]?\d+)D)?"
    r"(?:T(?=[-+\d.])(?:(?P<h>[-+]?\d+)H)?(?:(?P<mi>[-+]?\d+)M)?(?:(?P<s>[-+]?\d*\.?\d*)S)?)?$"
)


@dataclass(frozen=True, slots=True)
class Interval:
    """A SQL interval: ``months``, ``days`` and ``microseconds``, each with its own sign (lossless)."""

    months: int = 0
    days: int = 0
    microseconds: int = 0

    @classmethod
    def from_iso(cls, text: str) -> Interval:
        """Parse ISO 8601 duration text as PostgreSQL prints it (``P1Y2M3DT4H5M6.5S``, ``P-1Y-2M``, ``PT0S``)."""
        m = _ISO.match(text)
        if m is None:
            raise ValueError(f"not an ISO 8601 interval: {text!r}")
        g = m.groupdict()

        def n(key: str) -> int:
            v = g[key]
            return int(v) if v else 0

        seconds = g["s"]
        micros = n("h") * _US_PER_HOUR + n("mi") * _US_PER_MINUTE
        if seconds:
            micros += int((Decimal(seconds) * 1_000_000).to_integral_value())
        return cls(months=n("y") * 12 + n("mo"), days=n("w") * 7 + n("d"), microseconds=micros)

    @classmethod
    def from_timedelta(cls, value: dt.timedelta) -> Interval:
        """The interval of a :class:`datetime.timedelta` (days and microseconds, no months)."""
        return cls(0, value.days, value.seconds * 1_000_000 + value.microseconds)

    def to_timedelta(self) -> dt.timedelta:
        """An approximation as a timedelta: a year is 365.25 days and a month 30 days (PostgreSQL's own
        rule in ``EXTRACT(EPOCH FROM interval)``). Raises OverflowError past timedelta's range."""
        years, months = divmod(abs(self.months), 12)
        sign = -1 if self.months < 0 else 1
        us = sign * (years * 36525 * _US_PER_DAY // 100 + months * 30 * _US_PER_DAY)
        return dt.timedelta(microseconds=us + self.days * _US_PER_DAY + self.microseconds)

    def __str__(self) -> str:
        """ISO 8601 text in PostgreSQL's ``iso_8601`` style (``PT0S`` for zero)."""
        out = ["P"]
        years = int(self.months / 12)  # truncates toward zero, as PostgreSQL does
        months = self.months - years * 12
        if years:
            out.append(f"{years}Y")
        if months:
            out.append(f"{months}M")
        if self.days:
            out.append(f"{self.days}D")
        us = self.microseconds
        if us or len(out) == 1:
            sign = "-" if us < 0 else ""
            us = abs(us)
            hours, us = divmod(us, _US_PER_HOUR)
            minutes, us = divmod(us, _US_PER_MINUTE)
            secs, frac = divmod(us, 1_000_000)
            out.append("T")
            if hours:
                out.append(f"{sign}{hours}H")
            if minutes:
                out.append(f"{sign}{minutes}M")
            if secs or frac or (not hours and not minutes):
                text = f"{secs}.{frac:06d}".rstrip("0").rstrip(".") if frac else str(secs)
                out.append(f"{sign}{text}S")
        return "".join(out)


class JsonNull:
    """The type of :data:`JSON_NULL`: a JSON ``null`` value, not SQL ``NULL``. Falsy; one instance."""

    _instance: JsonNull | None = None

    def __new__(cls) -> JsonNull:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "JSON_NULL"

    def __reduce__(self) -> str:
        return "JSON_NULL"

    def __eq__(self, other: Any) -> bool:
        return other is self

    def __hash__(self) -> int:
        return 0x4A534F4E


JSON_NULL: Final = JsonNull()
