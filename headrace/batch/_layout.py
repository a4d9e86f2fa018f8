"""The folder layout every batch job shares: ``data_type=T/date=D`` (Hive-style partitions).

Archives, demux output (and its ``_errors``/``_state`` trees) and load's input all use it; this is the
one place that spells it. Paths are relative to a :class:`~headrace._storage.Store`'s base.
"""

from __future__ import annotations

from .._storage import Store

__all__ = ["data_types", "dates", "day_dir", "list_data_types", "type_dir"]

_TYPE = "data_type="
_DATE = "date="


def type_dir(data_type: str) -> str:
    """``data_type=T``: the folder of one data type."""
    return f"{_TYPE}{data_type}"


def day_dir(data_type: str, date: str) -> str:
    """``data_type=T/date=D``: the folder of one data type and day."""
    return f"{_TYPE}{data_type}/{_DATE}{date}"


def data_types(store: Store, under: str | None = None) -> list[str]:
    """The data types with a folder in ``store`` (under the folder ``under``, default the base)."""
    folder = store.base if under is None else store.path(under)
    return [d.removeprefix(_TYPE) for d in store.list_dirs(folder) if d.startswith(_TYPE)]


def dates(store: Store, data_type: str, under: str | None = None) -> list[str]:
    """The days with a folder of ``data_type`` in ``store`` (under the folder ``under``)."""
    folder = store.path(*(p for p in (under, type_dir(data_type)) if p))
    return [d.removeprefix(_DATE) for d in store.list_dirs(folder) if d.startswith(_DATE)]


#: the public name (``headrace.batch.list_data_types``): the data types a store has folders for
list_data_types = data_types
