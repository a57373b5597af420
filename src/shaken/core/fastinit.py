"""Positional constructors for the frozen, slotted dataclasses built on every call.

Why by hand: a frozen dataclass's ``__init__`` sets each field through
``object.__setattr__`` and takes its arguments by keyword; for a 19-field result that is most
of what a warm verification spends outside OpenSSL and the JSON scanner (callgrind: about
38,000 instructions for one ``VerificationResult(...)`` with every field named, 15,000 through
the constructor made here; ``bench/instructions.py``). The standard library offers no faster
way to build a slotted instance, so :func:`positional_constructor` writes one, as
:mod:`dataclasses` itself writes ``__init__``: every field positionally, in declaration order,
each set with its slot's own descriptor. The public keyword constructor stays the API; this is
for the hot paths inside the package, and ``tests/core/test_fastinit.py`` proves the two build
equal objects for every class that uses it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["positional_constructor"]

T = TypeVar("T")


def positional_constructor(cls: type[T]) -> Callable[..., T]:
    """A function taking every field of ``cls`` positionally, in field order, and returning
    the instance ``cls(**fields)`` would.

    :raises TypeError: ``cls`` is not a slotted dataclass, or it has a ``__post_init__`` or
        an ``init=False`` field (whose work this would skip).
    """
    if not dataclasses.is_dataclass(cls) or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a slotted dataclass")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__} has a __post_init__")
    names = [f.name for f in dataclasses.fields(cls)]
    if "self" in names or any(name.startswith("_") for name in names):
        raise TypeError(f"{cls.__name__} has a field named like the constructor's own names")
    if any(not f.init for f in dataclasses.fields(cls)):
        raise TypeError(f"{cls.__name__} has a field outside __init__")
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    for index, name in enumerate(names):
        namespace[f"_set{index}"] = getattr(cls, name).__set__
    params = ", ".join(names)
    body = "".join(f"    _set{index}(self, {name})\n" for index, name in enumerate(names))
    source = f"def make({params}):\n    self = _new(_cls)\n{body}    return self\n"
    exec(compile(source, f"<positional constructor of {cls.__qualname__}>", "exec"), namespace)
    make: Callable[..., T] = namespace["make"]
    make.__qualname__ = make.__name__ = f"make_{cls.__name__}"
    make.__doc__ = f"{cls.__name__}({params}), positionally."
    return make
