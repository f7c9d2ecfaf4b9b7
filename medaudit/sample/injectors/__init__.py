"""Violation injectors: one module per rule type, each defining ``INJECTOR``.

Discovered like the rule types (:mod:`medaudit.types`): the module name is the rule type's
name. An injector for a type the engine does not know is skipped. See :mod:`medaudit.sample`
for the interface.
"""

from __future__ import annotations

from ...discovery import discover as find_modules
from ...types import REGISTRY
from ..inject import Injector


def discover() -> dict[str, Injector]:
    import sys

    found = find_modules(sys.modules[__name__], "INJECTOR", lambda inj: inj.type)
    return {name: inj for name, inj in found.items() if name in REGISTRY}
