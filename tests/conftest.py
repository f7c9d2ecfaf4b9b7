"""Shared fixtures, and the `slow` marks of tests/slow.txt."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from kit import set_wall_clock

SLOW_LIST = Path(__file__).with_name("slow.txt")
#: the national knowledge workbooks (not in the repo; tests that need them skip without them)
NHSA = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "nhsa-rule-batches"


def slow_functions(text: str) -> set[str]:
    """``FILE::FUNCTION`` of every test named in a slow list (comments and blank lines skipped)."""
    return {line.split("#", 1)[0].strip() for line in text.splitlines()} - {""}


def pytest_addoption(parser):
    parser.addoption(
        "--cpu-times",
        metavar="FILE",
        help="write each test's CPU seconds (setup, call and teardown, this process's threads) to FILE "
        "(one JSON line per test; each xdist worker appends its own): what tests/slow.txt is decided by",
    )


def pytest_collection_modifyitems(config, items):
    slow = slow_functions(SLOW_LIST.read_text(encoding="utf-8"))
    for item in items:
        if f"{item.path.name}::{getattr(item, 'originalname', item.name)}" in slow:
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    out = item.config.getoption("cpu_times")
    if not out:
        yield
        return
    cpu, wall = time.process_time(), time.perf_counter()
    yield
    line = {"test": item.nodeid, "cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall}
    with open(out, "a", encoding="utf-8") as fh:  # one short appended write: workers do not interleave
        fh.write(json.dumps(line) + "\n")


@pytest.fixture
def wall_clock(monkeypatch):
    """``wall_clock("2026-04-03")``: the computer's clock says that day from now on (test-only)."""
    return lambda when: set_wall_clock(monkeypatch, when)


@pytest.fixture(scope="session")
def nhsa_imported(tmp_path_factory):
    """The national workbooks imported once per test process: ``(folder, result)`` of
    :func:`medaudit.nhsa.import_batches` (what ``medaudit rules import-nhsa`` writes). test_nhsa.py
    and the Spark comparison read it (an import costs about a second of CPU); a test that changes
    the folder puts it back."""
    if not NHSA.is_dir():
        pytest.skip(f"the national knowledge workbooks are not at {NHSA}")
    from medaudit.nhsa import import_batches

    out = tmp_path_factory.mktemp("national")
    return out, import_batches(NHSA, out)
