"""Checks shared by the command modules' options (the values are refused before anything runs)."""

from __future__ import annotations

import re
from typing import Optional

import typer

_PERIOD = re.compile(r"(?P<y>\d{4})-(?P<m>0[1-9]|1[0-2])")


def check_period(value: Optional[str]) -> Optional[str]:
    """``--period``: a settlement month written YYYY-MM (2026-03), as ``findings.period`` stores it."""
    if value is None:
        return None
    v = value.strip()
    if not _PERIOD.fullmatch(v):
        raise typer.BadParameter(f"{value!r} is not a month written YYYY-MM (e.g. 2026-03)")
    return v
