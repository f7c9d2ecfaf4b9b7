"""Violation injectors: one module per rule type, each defining ``INJECTOR``.

Discovered like the rule types (:mod:`medaudit.types`): the module name is the rule type's
name. An injector for a type the engine does not know is skipped. See :mod:`medaudit.sample`
for the interface.
"""

from __future__ import annotations

import importlib
import pkgutil

from ...types import REGISTRY
from ..inject import Injector


def discover() -> dict[str, Injector]:
    found: dict[str, Injector] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        inj = getattr(module, "INJECTOR", None)
        if inj is None:
            continue
        if inj.type != info.name:
            raise RuntimeError(f"medaudit/sample/injectors/{info.name}.py injects {inj.type!r}; the module must be named after it")
        if inj.type in REGISTRY:
            found[inj.type] = inj
    return found
