"""End to end: generate a sample batch, load it, screen it with the sample library in rules/,
and compare the findings with the answer key. Recall and precision must both be 1.0 at the
level of (rule type, visit, violating line); findings about an entity without a visit or lines
(peer_outlier) are compared by their finding key. Generic over rule types: an injector added for a
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


def entity_findings(con, key: pl.DataFrame) -> tuple[set, set]:
    """Findings about an entity with neither a visit nor lines (peer_outlier: a department's
    month) are one row (type, -, -) in the line-level comparison, however many there are. Compare
    them by finding key: (rule_type, finding_key) flagged, and as the key rows' notes name them
    (``... [department|H001|A03|2026-03]``)."""
    rows = key.filter(pl.col("mdtrt_id").is_null() & (pl.col("bkkp_sn").is_null() | (pl.col("bkkp_sn") == "")))
    expected = {(t, n.rsplit("[", 1)[-1].rstrip("]")) for t, n in rows.select("rule_type", "note").iter_rows()}
    found = set(
        con.execute(
            """SELECT rule_type, finding_key FROM findings f
           WHERE mdtrt_id IS NULL AND NOT EXISTS (SELECT 1 FROM finding_lines l WHERE l.finding_id = f.finding_id)"""
        ).fetchall()
    )
    return found, expected


@pytest.mark.slow  # over 3 s (generates, loads or screens a whole batch)
def test_recall_and_precision_are_one(tmp_path):
    g = generate(tmp_path / "batch", visits=1100, seed=20260302)
    n_lines = g.tables["fee_list_d.csv"]
    assert n_lines >= 20_000, f"only {n_lines} fee lines"
    con, result, key = _screen(tmp_path / "batch", tmp_path)
    cmp = compare(con, key, result.run_id)
    report = cmp.report()
    print(report)
    assert cmp.missed.height == 0 and cmp.extra.height == 0, report
    # every injector injected something, and the library flagged it; but peer_outlier: the
    # sample rule judges departments with 30 admissions in a month (against 5 such peers), which
    # a batch of this size does not have (test_peer_outlier_is_injected_where_departments_are_large)
    injected = set(key["rule_type"])
    for name in discover():
        if name != "peer_outlier":
            assert name in injected, f"injector {name} injected nothing into {g.tables['mdtrt_d.csv']} visits"
    assert cmp.recall == 1.0 and cmp.precision == 1.0
    found, expected = entity_findings(con, key)
    assert found == expected, f"entity findings {sorted(found)}, expected {sorted(expected)}"


def test_a_missed_or_extra_line_is_reported(tmp_path):
    """The comparison can fail: drop a key row and add a made-up one."""
    generate(tmp_path / "batch", visits=150, seed=7)
    con, result, key = _screen(tmp_path / "batch", tmp_path)
    dropped = key.head(1)
    fake = pl.DataFrame(
        {
            "rule_type": ["restrict_gender"],
            "rule_id": ["R-SEX-001"],
            "mdtrt_id": ["MD202600000001"],
            "bkkp_sn": ["F9999999999"],
            "note": ["made up"],
        }
    )
    cmp = compare(con, pl.concat([key.slice(1), fake]), result.run_id)
    assert (
        cmp.extra.select("rule_type", "mdtrt_id", "bkkp_sn").rows()
        == dropped.select("rule_type", "mdtrt_id", "bkkp_sn").rows()
    )
    assert cmp.missed.select("bkkp_sn").to_series().to_list() == ["F9999999999"]
    assert cmp.recall < 1.0 and cmp.precision < 1.0


def test_same_seed_same_batch(tmp_path):
    a = generate(tmp_path / "a", visits=200, seed=11)
    generate(tmp_path / "b", visits=200, seed=11)
    for name in a.tables:
        assert filecmp.cmp(tmp_path / "a" / name, tmp_path / "b" / name, shallow=False), name
    generate(tmp_path / "c", visits=200, seed=12)
    assert not filecmp.cmp(tmp_path / "a" / "fee_list_d.csv", tmp_path / "c" / "fee_list_d.csv", shallow=False)


@pytest.mark.slow  # over 3 s (generates, loads or screens a whole batch)
def test_committed_sample_is_current_and_flags_every_injected_type(tmp_path):
    committed = ROOT / "sample_data" / "batch"
    if not committed.is_dir():
        pytest.skip("sample_data/batch is not in this checkout")
    g = generate(tmp_path / "batch", visits=300, seed=1)
    stale = [n for n in g.tables if not filecmp.cmp(tmp_path / "batch" / n, committed / n, shallow=False)]
    assert not stale, (
        f"sample_data/batch is out of date ({', '.join(stale)}); regenerate it with "
        "`medaudit sample generate --out sample_data/batch --visits 300 --seed 1`"
    )
    con, result, key = _screen(committed, tmp_path)
    cmp = compare(con, key, result.run_id)
    assert cmp.missed.height == 0 and cmp.extra.height == 0, cmp.report()
    found, expected = entity_findings(con, key)
    assert found == expected, f"entity findings {sorted(found)}, expected {sorted(expected)}"
    flagged = {r[0] for r in con.execute("SELECT DISTINCT rule_type FROM findings").fetchall()}
    assert set(discover()) - {"peer_outlier"} <= flagged  # 300 visits: no department of 30 admissions


@pytest.mark.slow  # over 3 s (generates, loads or screens a whole batch)
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


OTHER_TYPES_YAML = """
rules:
  - {id: O-DUPLINE, version: 1, name: 重复计费, type: duplicate_line}
  - {id: O-OUTSIDE, version: 1, name: 费用超出就诊期, type: fee_outside_visit}
  - {id: O-CATALOG, version: 1, name: 目录外, type: not_in_catalog}
  - {id: O-PRICE, version: 1, name: 超标准收费, type: price_cap}
  - {id: O-INGR, version: 1, name: 重复用药, type: duplicate_ingredient}
  - {id: O-INV, version: 1, name: 进销存不符, type: inventory_mismatch}
  - {id: O-HFP, version: 1, name: 高频购药, type: high_frequency_purchase, params: {max_days_per_month: 4}}
  - {id: O-READM, version: 1, name: 分解住院, type: readmission}
  - {id: O-OVL-I, version: 1, name: 重复住院, type: overlapping_stays, params: {kind: inpatient}}
  - {id: O-OVL-O, version: 1, name: 住院期间门诊, type: overlapping_stays, params: {kind: outpatient}}
  - {id: O-GDX, version: 1, name: 性别与诊断不符, type: gender_diagnosis_conflict}
  - {id: O-PERIOD, version: 1, name: 糖化血红蛋白15天1次, type: period_limit,
     items: {codes: ["002503020030000"]}, params: {max_count: 1, period_days: 15}}
  - {id: O-COURSE, version: 1, name: 头孢呋辛钠限14天, type: course_limit,
     items: {codes: ["XJ01DCT073B001010104040"]}, params: {max_days: 14}}
  - {id: O-SUPPLY, version: 1, name: 门诊开药不超过15天, type: supply_days_limit, params: {max_days: 15, outpatient_only: true}}
  - {id: O-SUPPLY2, version: 1, name: 出院带药不超过14天, type: supply_days_limit, params: {max_days: 14, discharge_only: true}}
  - {id: O-SEC, version: 1, name: 甲状腺手术组, type: secondary_procedure,
     items: {codes: ["003303000120000", "003303000100000"]}, params: {group: 甲状腺手术组}}
"""


@pytest.mark.slow  # over 3 s (generates, loads or screens a whole batch)
def test_clean_data_is_clean_for_the_other_types_too(tmp_path):
    """Typical rules of the types without an injector yet flag nothing in the clean data, so
    their injectors can be added with precision 1.0 (peer_outlier is statistical: left out)."""
    from medaudit.types import REGISTRY

    lib_file = tmp_path / "other.yaml"
    lib_file.write_text(OTHER_TYPES_YAML, encoding="utf-8")
    lib = load_library(lib_file)
    lib.rules = [r for r in lib.rules if r.type in REGISTRY]
    generate(tmp_path / "batch", visits=1500, seed=5, types=[])
    con = db.connect(tmp_path / "other.duckdb")
    load_batch(tmp_path / "batch", con)
    screen(con, lib)
    found = con.sql("SELECT rule_id, mdtrt_id, evidence FROM findings ORDER BY 1, 2").pl()
    assert found.height == 0, found


@pytest.mark.slow
def test_peer_outlier_is_injected_where_departments_are_large(tmp_path):
    """With realistic minimums (30 admissions a department and month, 5 such peers) the
    peer_outlier injector needs a large batch: there it injects one outlying department, and the
    sample rule flags exactly that one; a batch too small gets nothing injected and nothing flagged."""
    rules = load_library(RULES / "peer_outlier.yaml")
    for visits, injected in ((15_000, True), (3_000, False)):
        out = tmp_path / str(visits)
        generate(out / "batch", visits=visits, seed=1, types=["peer_outlier"])
        con = db.connect(out / "t.duckdb")
        load_batch(out / "batch", con)
        screen(con, rules)
        key = pl.read_csv(out / "batch" / "answer_key.csv", infer_schema=False)
        found, expected = entity_findings(con, key)
        assert found == expected, f"{visits} visits: entity findings {sorted(found)}, expected {sorted(expected)}"
        assert bool(expected) == injected, (visits, expected)
        if injected:
            ev = con.execute("SELECT evidence FROM findings WHERE rule_id = 'R-PEER-001'").fetchall()[0][0]
            assert "同类 " in ev and "中位数 0.0%" in ev and "住院 " in ev, ev
        con.close()
