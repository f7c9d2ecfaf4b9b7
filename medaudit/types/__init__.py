"""The rule types: one small module per type, each defining ``RULE_TYPE``.

The registry is built by discovering the modules of this package, so adding a rule type is
adding one file (its docs, parameters and SQL together). ``medaudit rules explain TYPE`` shows
a type's docs.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import RuleType

_SKIP = {"base"}


def _discover() -> dict[str, RuleType]:
    found: dict[str, RuleType] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name in _SKIP or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        rt = getattr(module, "RULE_TYPE", None)
        if rt is None:
            continue
        if rt.name != info.name:
            raise RuntimeError(f"medaudit/types/{info.name}.py defines rule type {rt.name!r}; the module must be named after it")
        found[rt.name] = rt
    return found


REGISTRY: dict[str, RuleType] = _discover()


def get(name: str) -> RuleType:
    return REGISTRY[name]
