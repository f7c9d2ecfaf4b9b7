"""The rule types: one small module per type, each defining ``RULE_TYPE``.

The registry is built by discovering the modules of this package, so adding a rule type is
adding one file (its docs, parameters and SQL together). ``medaudit rules explain TYPE`` shows
a type's docs.
"""

from __future__ import annotations

from ..discovery import discover
from .base import RuleType

_SKIP = frozenset({"base"})


def _discover() -> dict[str, RuleType]:
    import sys

    return discover(sys.modules[__name__], "RULE_TYPE", lambda rt: rt.name, skip=_SKIP)


REGISTRY: dict[str, RuleType] = _discover()
