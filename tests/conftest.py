"""Shared fixtures."""

from __future__ import annotations

import pytest

from kit import set_wall_clock


@pytest.fixture
def wall_clock(monkeypatch):
    """``wall_clock("2026-04-03")``: the computer's clock says that day from now on (test-only)."""
    return lambda when: set_wall_clock(monkeypatch, when)
