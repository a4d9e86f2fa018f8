"""Calendar arithmetic on whole Arrow arrays: days since 1970-01-01 of proleptic Gregorian dates."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["days_from_civil", "days_in_month"]

_DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]


def days_in_month(year: int) -> pa.Array:
    """The 12 month lengths of ``year`` (index 0 is January), as int64."""
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return pa.array([d + (1 if i == 1 and leap else 0) for i, d in enumerate(_DAYS_IN_MONTH)], pa.int64())


def days_from_civil(y: pa.Array | int, m: pa.Array, d: pa.Array) -> pa.Array:
    """Days since 1970-01-01 of year ``y``, month ``m`` (1-12), day ``d`` (H. Hinnant's
    ``days_from_civil``), for years >= 0; int64 arrays (``y`` may be one int for all)."""
    y = pc.subtract(y, pc.cast(pc.less_equal(m, 2), pa.int64()))
    era = pc.divide(y, 400)
    yoe = pc.subtract(y, pc.multiply(era, 400))
    mp = pc.if_else(pc.greater(m, 2), pc.subtract(m, 3), pc.add(m, 9))
    doy = pc.add(pc.divide(pc.add(pc.multiply(mp, 153), 2), 5), pc.subtract(d, 1))
    doe = pc.add(pc.subtract(pc.add(pc.multiply(yoe, 365), pc.divide(yoe, 4)), pc.divide(yoe, 100)), doy)
    days: pa.Array = pc.subtract(pc.add(pc.multiply(era, 146097), doe), 719468)
    return days
