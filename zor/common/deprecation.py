"""Renamed parameters: the old name still works for one release, with a DeprecationWarning.

A class decorated with :func:`renamed_parameters` takes each old keyword in its
constructor (mapped onto the new one; passing both is a :class:`ConfigError`) and
reads the old attribute name as the new one; both warn, naming the new name.

Example:
    >>> import warnings
    >>> from dataclasses import dataclass
    >>> @renamed_parameters({"rate": "homeostasis_rate"})
    ... @dataclass
    ... class Settings:
    ...     homeostasis_rate: float = 0.0
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     Settings(rate=0.5).homeostasis_rate
    0.5
"""

from __future__ import annotations

import functools
import warnings
from typing import Any, Callable, TypeVar

from zor.common.errors import ConfigError

__all__ = ["renamed_parameters", "rename_keys"]

T = TypeVar("T", bound=type)


def rename_keys(owner: str, values: dict[str, Any], renames: dict[str, str], warn: bool = True,
                stacklevel: int = 3) -> dict[str, Any]:
    """``values`` with each old key of ``renames`` (old → new) under its new name.

    Raises ConfigError when a key is given under both names; warns (DeprecationWarning)
    for each old key when ``warn``.
    """
    values = dict(values)
    for old, new in renames.items():
        if old not in values:
            continue
        if new in values:
            raise ConfigError(f"{owner}: got both {old}= and {new}=; {old} is the old name of {new}, give only {new}")
        if warn:
            warnings.warn(f"{owner}({old}=...) is deprecated: use {new}=", DeprecationWarning, stacklevel=stacklevel)
        values[new] = values.pop(old)
    return values


def _alias(owner: str, old: str, new: str) -> property:
    """A property that reads and writes ``new`` under the old name, warning each time."""

    def get(self: Any) -> Any:
        warnings.warn(f"{owner}.{old} is deprecated: use {owner}.{new}", DeprecationWarning, stacklevel=2)
        return getattr(self, new)

    def put(self: Any, value: Any) -> None:
        warnings.warn(f"{owner}.{old} is deprecated: use {owner}.{new}", DeprecationWarning, stacklevel=2)
        setattr(self, new, value)

    return property(get, put, doc=f"Deprecated name of {new}.")


def renamed_parameters(renames: dict[str, str]) -> Callable[[T], T]:
    """Class decorator: ``__init__`` also takes the old keywords of ``renames`` (old → new)."""

    def wrap(cls: T) -> T:
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **rename_keys(cls.__name__, kwargs, renames))

        cls.__init__ = __init__
        for old, new in renames.items():
            setattr(cls, old, _alias(cls.__name__, old, new))
        return cls

    return wrap
