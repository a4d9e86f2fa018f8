"""SQLAlchemy engines from user-given URLs.

A bare ``postgresql://`` URL means psycopg (3) to SQLAlchemy 2.1, and ``mysql://`` means mysqlclient;
headrace's extras install psycopg2 and PyMySQL, the drivers its value conversions are tested with. So
a bare ``postgresql://`` URL gets psycopg2 whenever it is installed (other packages, Airflow's
PostgreSQL provider for one, install psycopg 3 beside it, and the two drivers read some values
differently: BC dates, years past 9999), psycopg 3 only when psycopg2 is missing; a bare ``mysql://``
gets mysqlclient when installed, else PyMySQL. A URL that names a driver is used as is.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

__all__ = ["create_engine", "resolve_url"]

_FALLBACK = {
    # dialect: (module of SQLAlchemy's default driver, driver to use when it is missing, its module)
    "mysql": ("MySQLdb", "pymysql", "pymysql"),
    "mariadb": ("MySQLdb", "pymysql", "pymysql"),
}
#: dialect: (driver headrace prefers whenever it is installed, its module)
_PREFERRED = {"postgresql": ("psycopg2", "psycopg2")}


def resolve_url(url: str | URL) -> URL:
    """``url`` with a driver that is installed, when it names none."""
    u = make_url(url)
    if u.drivername in {"postgres"}:
        u = u.set(drivername="postgresql")
    preferred = _PREFERRED.get(u.drivername)
    if preferred is not None and importlib.util.find_spec(preferred[1]) is not None:
        return u.set(drivername=f"{u.drivername}+{preferred[0]}")
    fallback = _FALLBACK.get(u.drivername)
    if fallback is not None:
        default_mod, driver, driver_mod = fallback
        if importlib.util.find_spec(default_mod) is None and importlib.util.find_spec(driver_mod) is not None:
            u = u.set(drivername=f"{u.drivername}+{driver}")
    return u


def create_engine(url: str | URL, **kwargs: Any) -> sa.engine.Engine:
    """:func:`sqlalchemy.create_engine` on :func:`resolve_url` of ``url``."""
    return sa.create_engine(resolve_url(url), **kwargs)
