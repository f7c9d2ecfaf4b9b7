"""End to end: generate a sample batch, load it, screen it with the sample library in rules/,
and compare the findings with the answer key. Recall and precision must both be 1.0 at the
level of (rule type, visit, violating line). Generic over rule types: an injector added for a
new type (medaudit/sample/injectors/) is covered without touching this file.
"""

from __future__ import annotations

import filecmp
from pathlib import Path

import polars as pl
import pytest

from medaudit import db
from medaudit.engine import screen
from medaudit.library import Library, load_library
from medaudit.loader import load_batch
from medaudit.sample import generate
from medaudit.sample.check import compare
from medaudit.sample.injectors import discover

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "rules"


def sample_library() -> Library:
    """The YAML files at the top of rules/ (not derived sub-folders such as rules/national/)."""
    libs = [load_library(f) for f in sorted(RULES.glob("*.yaml"))]
    return Library([r for lib in libs for r in lib.rules], RULES)


def _screen(batch: Path, tmp_path: Path):
    con = db.connect(tmp_path / "e2e.duckdb")
    loaded = load_batch(batch, con)
    assert sum(t.rejected for t in loaded.tables) == 0, loaded.rejected
    result = screen(con, sample_library())
    key = pl.read_csv(batch / "answer_key.csv", infer_schema=False)
    return con, result, key


def test_recall_and_precision_are_one(tmp_path):
    g = generate(tmp_path / "batch", visits=1100, seed=20260302)
    n_lines = g.tables["fee_list_d.csv"]
    assert n_lines >= 20_000, f"only {n_lines} fee lines"
    con, result, key = _screen(tmp_path / "batch", tmp_path)
    cmp = compare(con, key, result.run_id)
    report = cmp.report()
    print(report)
    assert cmp.missed.height == 0 and cmp.extra.height == 0, report
    # every injector injected something, and the library flagged it
    injected = set(key["rule_type"])
    for name in discover():
        assert name in injected, f"injector {name} injected nothing into {g.tables['mdtrt_d.csv']} visits"
    assert cmp.recall == 1.0 and cmp.precision == 1.0


def test_a_missed_or_extra_line_is_reported(tmp_path):
    """The comparison can fail: drop a key row and add a made-up one."""
    generate(tmp_path / "batch", visits=150, seed=7)
    con, result, key = _screen(tmp_path / "batch", tmp_path)
    dropped = key.head(1)
    fake = pl.DataFrame({"rule_type": ["restrict_gender"], "rule_id": ["R-SEX-001"], "mdtrt_id": ["MD202600000001"],
                         "bkkp_sn": ["F9999999999"], "note": ["made up"]})
    cmp = compare(con, pl.concat([key.slice(1), fake]), result.run_id)
    assert cmp.extra.select("rule_type", "mdtrt_id", "bkkp_sn").rows() == dropped.select("rule_type", "mdtrt_id", "bkkp_sn").rows()
    assert cmp.missed.select("bkkp_sn").to_series().to_list() == ["F9999999999"]
    assert cmp.recall < 1.0 and cmp.precision < 1.0


def test_same_seed_same_batch(tmp_path):
    a = generate(tmp_path / "a", visits=200, seed=11)
    generate(tmp_path / "b", visits=200, seed=11)
    for name in a.tables:
        assert filecmp.cmp(tmp_path / "a" / name, tmp_path / "b" / name, shallow=False), name
    generate(tmp_path / "c", visits=200, seed=12)
    assert not filecmp.cmp(tmp_path / "a" / "fee_list_d.csv", tmp_path / "c" / "fee_list_d.csv", shallow=False)


def test_committed_sample_is_current_and_flags_every_injected_type(tmp_path):
    committed = ROOT / "sample_data" / "batch"
    if not committed.is_dir():
        pytest.skip("sample_data/batch is not in this checkout")
    g = generate(tmp_path / "batch", visits=300, seed=1)
    stale = [n for n in g.tables if not filecmp.cmp(tmp_path / "batch" / n, committed / n, shallow=False)]
    assert not stale, (f"sample_data/batch is out of date ({', '.join(stale)}); regenerate it with "
                       "`medaudit sample generate --out sample_data/batch --visits 300 --seed 1`")
    con, result, key = _screen(committed, tmp_path)
    cmp = compare(con, key, result.run_id)
    assert cmp.missed.height == 0 and cmp.extra.height == 0, cmp.report()
    flagged = {r[0] for r in con.execute("SELECT DISTINCT rule_type FROM findings").fetchall()}
    assert set(discover()) <= flagged


def test_clean_data_has_no_findings(tmp_path):
    """Without injectors the sample library flags nothing, decoys included (refunded,
    self-paid, refunded-settlement lines that look like violations)."""
    generate(tmp_path / "batch", visits=400, seed=3, types=[])
    con, result, key = _screen(tmp_path / "batch", tmp_path)
    assert key.height == 0
    n = con.execute("SELECT count(*) FROM findings").fetchall()[0][0]
    assert n == 0, con.sql("SELECT rule_id, mdtrt_id, evidence FROM findings LIMIT 20").pl()
    # the decoys are there: a 子宫造影 line for a man, refunded / self-paid / on a refunded settlement
    decoys = con.execute(
        """SELECT count(*) FROM fee_list_d f JOIN mdtrt_d v USING (mdtrt_id)
           WHERE f.hilist_code = '002101030300000' AND v.gend = '1' AND f.cnt > 0"""
    ).fetchall()[0][0]
    assert decoys == 3
