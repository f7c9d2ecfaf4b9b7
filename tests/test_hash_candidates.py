"""Types that find their candidate groups by a hash of the group's keys (frequency_limit,
duplicate_ingredient, duplicate_line) give the same findings whatever the hash does: groups that
share a hash only add candidates, which the exact windows after it drop. Proved by the worst
case: every group given one hash (``0 * hash(...)``), so every group of every rule is one
candidate, and the findings must be those of the real query, id for id and cent for cent."""

from __future__ import annotations

import dataclasses

import pytest

from medaudit import db
from medaudit.engine import screen
from medaudit.library import Library, load_library
from medaudit.loader import load_batch
from medaudit.sample import generate
from medaudit.types import REGISTRY

from test_end_to_end import RULES

HASHED = ("frequency_limit", "duplicate_ingredient", "duplicate_line")
FINDINGS = """SELECT finding_id, rule_type, claimed_amt, deduction_amt, evidence FROM findings
              WHERE rule_type IN ('frequency_limit', 'duplicate_ingredient', 'duplicate_line') ORDER BY 1"""


def _findings(batch, tmp_path, name: str) -> list[tuple]:
    lib = Library([r for f in sorted(RULES.glob("*.yaml")) for r in load_library(f).rules if r.type in HASHED], RULES)
    con = db.connect(tmp_path / f"{name}.duckdb")
    load_batch(batch, con)
    screen(con, lib)
    rows = con.execute(FINDINGS).fetchall()
    con.close()
    return rows


@pytest.mark.slow  # generates and screens a batch twice
def test_groups_sharing_a_hash_change_no_finding(tmp_path, monkeypatch):
    generate(tmp_path / "batch", visits=600, seed=20260415)
    real = _findings(tmp_path / "batch", tmp_path, "real")
    assert {r[1] for r in real} == set(HASHED), "the batch must hold findings of every hashed type"
    for name in HASHED:
        rt = REGISTRY[name]
        assert "hash(" in rt.query, name
        monkeypatch.setitem(REGISTRY, name, dataclasses.replace(rt, query=rt.query.replace("hash(", "0 * hash(")))
    collided = _findings(tmp_path / "batch", tmp_path, "collided")
    assert collided == real


def test_day_repeat_is_true_on_every_line_with_a_same_day_twin(tmp_path):
    """``lines.day_repeat`` lets duplicate_line and frequency_limit group only the lines that have
    another line of the same visit, code and day: it must never be FALSE on such a line (a
    finding would be lost), whole and in a screen's parts. On the committed sample
    (refunds included) it is TRUE on every twin and FALSE on most lines."""
    from medaudit import engine

    from test_incremental import SAMPLE

    con = db.connect(tmp_path / "lines.duckdb")
    load_batch(SAMPLE, con)
    twins = """SELECT count(*) FILTER (WHERE NOT day_repeat AND twin), count(*) FILTER (WHERE twin),
                      count(*) FILTER (WHERE NOT day_repeat), count(*)
               FROM (SELECT day_repeat, count(*) OVER (PARTITION BY mdtrt_id, hilist_code, fee_date) > 1 AS twin
                     FROM lines)"""
    engine.prepare_lines(con, "post_hoc")
    missed, n_twins, n_false, n = con.execute(twins).fetchall()[0]
    assert missed == 0
    assert n_twins > 0 and n_false > n // 2, (n_twins, n_false, n)
    # a part's lines: the twins of its persons' visits (all in the part)
    engine.line_adjustments(con)
    for i in range(3):
        engine.prepare_lines(con, "post_hoc", part=(i, 3), adj=engine.ADJ)
        assert con.execute(twins).fetchall()[0][0] == 0
    con.close()
