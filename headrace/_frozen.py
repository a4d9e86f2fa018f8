"""Fast construction of frozen, slotted dataclasses, for the types built once per event.

A frozen dataclass's generated ``__init__`` stores each field with ``object.__setattr__`` (its own
``__setattr__`` refuses), a C call per field: for the 13 fields of a client ``ChangeEvent`` that is
about four times the cost of plain attribute stores, and the per-event paths (pgoutput assembly,
frame decoding, the client's event decoding) build one or two such objects per event.

:func:`fast_constructor` gives a function that builds an instance with plain attribute stores on
a private twin class — the same ``__slots__`` on the same base, so the same memory layout — and
then sets its ``__class__`` to the dataclass (Python allows that between classes of the same
layout). The result is an ordinary instance of the dataclass: equal to the one its constructor
builds, frozen afterwards, hashing, comparing, printing and pickling the same
(``tests/test_event_fastpaths.py`` checks this).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["fast_constructor"]

T = TypeVar("T")


def fast_constructor(cls: type[T]) -> Callable[..., T]:
    """A function taking every field of ``cls`` positionally (defaults included, in field order)
    and returning the instance ``cls(*fields)`` would. ``cls`` must be a frozen dataclass with
    ``slots=True``, a direct subclass of ``object``, without ``__post_init__`` or ``InitVar``s."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen dataclass with slots")
    if cls.__bases__ != (object,) or hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: only a plain frozen dataclass (no base, no __post_init__)")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    names = [f.name for f in fields]
    if not all(f.init for f in fields) or tuple(cls.__dict__["__slots__"]) != tuple(names):
        raise TypeError(f"{cls.__name__}: every field must be an __init__ field and a slot")
    if {"o", "_new", "_twin", "_cls"} & set(names):
        raise TypeError(f"{cls.__name__}: a field name the generated code uses itself")
    twin = type(f"_{cls.__name__}Builder", (), {"__slots__": tuple(names), "__module__": cls.__module__})
    args = ", ".join(names)
    body = "".join(f"    o.{n} = {n}\n" for n in names)
    src = f"def make({args}):\n    o = _new(_twin)\n{body}    o.__class__ = _cls\n    return o\n"
    env: dict[str, Any] = {"_new": object.__new__, "_twin": twin, "_cls": cls}
    exec(compile(src, f"<fast {cls.__name__}>", "exec"), env)
    make: Callable[..., T] = env["make"]
    try:
        probe = make(*range(len(names)))
    except TypeError:  # an interpreter that refuses the __class__ assignment: the plain constructor
        return cls
    return make if probe == cls(*range(len(names))) else cls
