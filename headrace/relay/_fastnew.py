"""A cheaper constructor for the frozen, slotted dataclasses made once per row (events, change events).

A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` (its own
``__setattr__`` refuses), which for a 13-field :class:`~headrace.relay.client.ChangeEvent` costs
several times what building the values does. :func:`fast_constructor` gives a function taking the
fields positionally, in declaration order, that builds an instance of a plain twin class with the
same slots (plain attribute stores) and then turns it into the dataclass by assigning ``__class__``
(allowed between classes with the same slot layout). The result is an ordinary instance of the
dataclass: equal to, and indistinguishable from, one made by its ``__init__``; it stays frozen.

Where the interpreter refuses the ``__class__`` assignment, the dataclass itself is returned.
Fields are taken as given: no ``__post_init__``, no default values (every field is passed).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["fast_constructor"]

T = TypeVar("T")


def fast_constructor(cls: type[T]) -> Callable[..., T]:
    """``make(*fields) → cls instance`` (see the module docstring); ``cls`` itself where it cannot."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    slots = getattr(cls, "__slots__", None)
    if cls.__bases__ != (object,) or slots is None or tuple(slots) != tuple(names) or hasattr(cls, "__post_init__"):
        return cls
    twin = type(f"_{cls.__name__}Fields", (), {"__slots__": tuple(names)})
    args = ", ".join(names)
    body = "".join(f"    o.{n} = {n}\n" for n in names)
    src = f"def make({args}):\n    o = _twin()\n{body}    o.__class__ = _cls\n    return o\n"
    env: dict[str, Any] = {"_twin": twin, "_cls": cls}
    exec(compile(src, f"<headrace fast {cls.__name__}>", "exec"), env)  # built from field names only
    make: Callable[..., T] = env["make"]
    try:
        probe = make(*range(len(names)))
    except TypeError:  # the interpreter does not allow the __class__ assignment
        return cls
    if probe != cls(*range(len(names))):
        return cls
    return make
