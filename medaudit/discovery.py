"""Find the plug-in modules of a package: one module per rule type (rule types, injectors)."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import Any


def discover(package: ModuleType, attr: str, name_of, skip: frozenset[str] = frozenset()) -> dict[str, Any]:
    """``{name: obj}`` for every module of ``package`` defining ``attr``.

    ``name_of(obj)`` must equal the module's name (a module is named after what it defines),
    else RuntimeError names the file. Modules starting with ``_`` and those in ``skip`` are
    not plug-ins.
    """
    found: dict[str, Any] = {}
    folder = package.__name__.replace(".", "/")
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if info.name.startswith("_") or info.name in skip:
            continue
        obj = getattr(importlib.import_module(f"{package.__name__}.{info.name}"), attr, None)
        if obj is None:
            continue
        if name_of(obj) != info.name:
            raise RuntimeError(f"{folder}/{info.name}.py defines {name_of(obj)!r}; the module must be named after it")
        found[info.name] = obj
    return found
