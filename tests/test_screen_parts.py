"""A big batch screened in parts of persons gives the findings of one screen over all its lines.

``engine.screen`` splits a full screen of more fee lines than ``part_lines`` into parts of
persons: the types that judge one person's visits run part by part, the month- and
everything-wide ones once over a view of all lines. The committed sample (every rule type of
``rules/``) is screened both ways, both stages, and everything stored must be identical: finding
ids, claims, deductions, evidence, finding lines and states.
"""

from __future__ import annotations

import dataclasses
import shutil
import textwrap
from pathlib import Path

import pytest

from medaudit import db as dbm
from medaudit import engine, resources
from medaudit.engine import screen
from medaudit.incremental import Scope
from medaudit.library import load_library
from medaudit.loader import load_batch
from medaudit.types import REGISTRY

from kit import Batch, loaded_db, write_rules
from test_incremental import RULES, SAMPLE, STAGES, state
from test_types_profiling import DOCTOR_DRUG_SHARE, drug_visits


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("parts") / "loaded.duckdb"
    con = dbm.connect(path)
    load_batch(SAMPLE, con)
    con.close()
    return path


def screened(loaded: Path, tmp: Path, part_lines: int | None, rules: Path = RULES) -> tuple[dict, list[int]]:
    path = tmp / f"screen{part_lines}.duckdb"
    shutil.copyfile(loaded, path)
    con = dbm.connect(path)
    library = load_library(rules)
    parts = [screen(con, library, st, scope=Scope("all"), part_lines=part_lines).n_parts for st in STAGES]
    out = state(con)
    con.close()
    return out, parts


@pytest.mark.parametrize("n_parts", [3, pytest.param(7, marks=pytest.mark.slow)])
def test_parts_equal_one_screen(loaded, tmp_path, n_parts):
    con = dbm.connect(loaded, read_only=True)
    n_fee = con.execute("SELECT count(*) FROM fee_list_d").fetchall()[0][0]
    con.close()
    whole, parts_whole = screened(loaded, tmp_path, None)
    split, parts_split = screened(loaded, tmp_path, -(-n_fee // n_parts))
    assert parts_whole == [1, 1]
    assert parts_split == [n_parts, n_parts]
    assert whole["findings"], "the sample must give findings"
    # the types whose part files hold only what they read of the lines are judged here too
    # (but peer_outlier: the sample has no department large enough, see the test below)
    types = {r.id: r.type for r in load_library(RULES).rules}
    found = {types[f[1]] for f in whole["findings"]}
    missing = {t for t, rt in REGISTRY.items() if rt.line_inputs} - found - {"peer_outlier"}
    assert not missing, f"no findings of {missing} in the sample"
    for part in whole:
        assert whole[part] == split[part], f"{part} differ in {n_parts} parts"


def test_every_person_in_one_part(loaded):
    """The parts cover every person once (a person's lines never split across parts), and the
    ranges cut from a sample of the lines hold about as many lines each."""
    con = dbm.connect(loaded, read_only=True)
    k = 5
    engine.set_part_bounds(con, k)
    in_parts = " + ".join(f"CAST({engine.person_part('psn_no', i, k)} AS INT)" for i in range(k))
    for table in ("mdtrt_d", "setl_d", "fee_list_d"):
        wrong, rows = con.execute(
            f"SELECT count(*) FILTER (WHERE n <> 1), count(*) FROM (SELECT {in_parts} AS n FROM {table})"
        ).fetchall()[0]
        assert rows and wrong == 0, table
    sizes = [
        con.execute(f"SELECT count(*) FROM fee_list_d WHERE {engine.person_part('psn_no', i, k)}").fetchall()[0][0]
        for i in range(k)
    ]
    total = con.execute("SELECT count(*) FROM fee_list_d").fetchall()[0][0]
    con.close()
    assert sum(sizes) == total
    assert min(sizes) > total / k / 2 and max(sizes) < total / k * 2, sizes


def test_part_bounds_are_bound_values_not_sql(tmp_path):
    """The persons' ids that cut the parts are data: ids holding quotes and SQL text still fall in
    exactly one part each, and nothing they say runs."""
    con = dbm.connect(tmp_path / "p.duckdb")
    ids = [f"P{i:03d}" for i in range(40)] + ["x'); DROP TABLE fee_list_d; --", "y' OR '1'='1", 'z"; SELECT 1; --']
    con.execute("CREATE TEMP TABLE people AS SELECT unnest(?::VARCHAR[]) AS psn_no", [ids])
    con.execute("INSERT INTO fee_list_d (psn_no, bkkp_sn) SELECT psn_no, psn_no || '#' || i FROM people, range(3) t(i)")
    k = 4
    engine.set_part_bounds(con, k)
    bounds = con.execute(f"SELECT getvariable('{engine.PART_BOUNDS}')").fetchall()[0][0]
    assert len(bounds) == k - 1
    for i in range(k):
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW part{i} AS SELECT psn_no FROM people WHERE {engine.person_part('psn_no', i, k)}"
        )
    got = con.execute(" UNION ALL ".join(f"SELECT psn_no FROM part{i}" for i in range(k))).fetchall()
    assert sorted(p for (p,) in got) == sorted(ids)
    assert con.execute("SELECT count(*) FROM fee_list_d").fetchall()[0][0] == 3 * len(ids)
    with pytest.raises(ValueError):
        engine.person_part("psn_no", k, k)
    con.close()


def test_parts_lines_netted_once_are_the_lines_of_one_build(loaded, tmp_path):
    """A screen in parts nets the refunds of every part once (``engine.line_adjustments``) and
    builds each part's lines with them: together the parts' lines are those of one build, row
    for row, netted units, amounts and own-pay included. The sample has refunds that name their
    line and refunds that do not (matched on visit, code and day)."""
    path = tmp_path / "lines.duckdb"
    shutil.copyfile(loaded, path)
    con = dbm.connect(path)
    k, stage = 3, "post_hoc"  # (the sample has no open stays)
    engine.prepare_lines(con, stage)
    whole = {r[0]: r for r in con.execute("SELECT * FROM lines").fetchall()}
    engine.line_adjustments(con)
    linked, unlinked = con.execute(
        f"SELECT count(*) FILTER (lq > 0), count(*) FILTER (unq > 0) FROM {engine.ADJ}"
    ).fetchall()[0]
    assert linked and unlinked, "the sample must refund lines both ways"
    parts: dict = {}
    for i in range(k):
        engine.prepare_lines(con, stage, part=(i, k), adj=engine.ADJ)
        parts.update((r[0], r) for r in con.execute("SELECT * FROM lines").fetchall())
    assert whole and len(parts) == len(whole) and parts == whole, stage
    con.close()


def test_part_size_from_memory_limit():
    """The parts are sized from DuckDB's limit as the connection shows it (one size reader for
    that and for ``--memory-limit``: :func:`medaudit.resources.size_bytes`)."""

    assert resources.size_bytes("6.0 GiB") == 6 * 1024**3
    assert resources.size_bytes("5.5GB") == 5_500_000_000
    assert resources.size_bytes("800 MiB") == 800 * 1024**2
    with pytest.raises(ValueError):
        resources.size_bytes("lots")
    import duckdb

    con = duckdb.connect()
    con.execute("SET memory_limit = '1GiB'")
    assert resources.memory_limit_bytes(con) == 2**30


@pytest.mark.slow
def test_parts_with_a_query_over_everything(loaded, tmp_path):
    """The sample's analyst query judges each visit (``reach: visit``); as a query over everything
    (the default reach) it runs once over every part's lines, all their columns."""
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules, ignore=shutil.ignore_patterns("national"))
    text = (rules / "sql.yaml").read_text(encoding="utf-8")
    assert "reach: visit" in text
    (rules / "sql.yaml").write_text(text.replace("reach: visit", "reach: all"), encoding="utf-8")
    whole, _ = screened(loaded, tmp_path, None, rules)
    con = dbm.connect(loaded, read_only=True)
    n_fee = con.execute("SELECT count(*) FROM fee_list_d").fetchall()[0][0]
    con.close()
    split, parts = screened(loaded, tmp_path, -(-n_fee // 3), rules)
    assert parts == [3, 3]
    assert any(f[1] == "R-SQL-001" for f in whole["findings"]), "the query must flag something"
    for part in whole:
        assert whole[part] == split[part], f"{part} differ"


@pytest.mark.slow
def test_cli_part_lines(tmp_path):
    """``medaudit screen --part-lines N`` screens in parts and says so."""
    from typer.testing import CliRunner

    from medaudit.cli import app

    res = CliRunner().invoke(
        app, ["screen", str(SAMPLE), "--rules", str(RULES), "--db", str(tmp_path / "x.duckdb"), "--part-lines", "5000"]
    )
    assert res.exit_code == 0, res.output
    assert "parts of persons" in res.output
    res = CliRunner().invoke(app, ["screen", str(tmp_path / "x.duckdb"), "--rules", str(RULES), "--part-lines", "0"])
    assert res.exit_code != 0 and "part-lines" in res.output


@pytest.mark.slow
def test_a_spill_folder_with_a_quote_is_not_pasted_into_sql(loaded, tmp_path):
    """The parts' Parquet files go in the spill folder, whose path is written into a COPY
    statement: a folder name with a quote (``x'); DROP TABLE findings; --``) is never used there;
    the files go to the system's temporary folder instead, and the screen is the same."""
    hostile = tmp_path / "x'); DROP TABLE findings; --"
    hostile.mkdir()
    con = dbm.connect(tmp_path / "q.duckdb")
    con.execute("SET temp_directory = ?", [str(hostile)])
    folder = engine._parts_folder(con)
    try:
        assert "'" not in folder and not folder.startswith(str(hostile))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    con.close()
    whole, _ = screened(loaded, tmp_path, None)
    path = tmp_path / "hostile.duckdb"
    shutil.copyfile(loaded, path)
    con = dbm.connect(path)
    con.execute("SET temp_directory = ?", [str(hostile)])
    n_fee = con.execute("SELECT count(*) FROM fee_list_d").fetchall()[0][0]
    res = screen(con, load_library(RULES), "post_hoc", scope=Scope("all"), part_lines=-(-n_fee // 3))
    assert res.n_parts == 3
    got = con.execute("SELECT finding_id, claimed_amt FROM findings WHERE stage = 'post_hoc' ORDER BY 1").fetchall()
    con.close()
    assert got == [(f[0], f[13]) for f in whole["findings"] if f[2] == "post_hoc"]
    assert list(hostile.iterdir()) == [], "nothing written in the hostile folder"


def test_default_parts_keep_a_batch_a_little_over_a_part_whole_and_cut_bigger_ones_to_fit():
    """Without ``part_lines``: a batch up to a byte of the memory limit in 400 lines is screened
    whole (spilling a little costs less than parts), a bigger one in parts of a byte in 500
    (parts that spill cost more than more parts)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET memory_limit = '1GiB'")  # parts of 2,147,483 lines; whole up to 2,684,354
    con.execute("CREATE TABLE fee_list_d AS SELECT range AS bkkp_sn FROM range(2684354)")
    assert engine.person_parts(con) == 1
    con.execute("INSERT INTO fee_list_d VALUES (-1)")
    assert engine.person_parts(con) == 2
    con.execute("INSERT INTO fee_list_d SELECT -2 - range FROM range(4294967 - 2684355)")  # 2 x 2,147,483 + 1
    assert engine.person_parts(con) == 3
    assert engine.person_parts(con, part_lines=1_000_000) == 5


@pytest.mark.slow  # two screens of the sample, both stages (about 4 s)
def test_only_types_reading_visit_columns_from_their_lines_read_lines_v(loaded, tmp_path, monkeypatch):
    """A full screen builds ``lines`` without the visit's columns few types read and hands those
    types ``lines_v`` (every line joined to its visit). Which ones is decided by binding each
    type's query over the slim ``lines``: a type reading ``gend`` or ``los`` from the visits (not
    from its lines) names the column but needs no join of every line (at 10.48M lines those
    joins cost gender_diagnosis_conflict, outpatient_as_inpatient and peer_outlier several CPU
    seconds). Screening with every type on ``lines_v`` stores the same state."""
    monkeypatch.setattr(engine, "_READS_VISIT", {})
    (tmp_path / "slim").mkdir()
    (tmp_path / "wide").mkdir()
    slim, _ = screened(loaded, tmp_path / "slim", None)
    read = {t for t, v in engine._READS_VISIT.items() if v}
    assert {"restrict_gender", "restrict_age", "restrict_hosp_level", "restrict_insutype"} <= read
    assert "sql" in read  # an analyst's query may read any column
    # bed_days_over_los takes the length of stay from the visits, for its candidate stays only
    assert not read & {
        "gender_diagnosis_conflict",
        "outpatient_as_inpatient",
        "peer_outlier",
        "duplicate_line",
        "bed_days_over_los",
    }
    monkeypatch.setattr(engine, "reads_visit_columns", lambda con, rt: True)
    wide, _ = screened(loaded, tmp_path / "wide", None)
    assert slim["findings"], "the sample must give findings"
    assert slim == wide


def test_a_type_with_line_inputs_reads_the_lines_through_them_only():
    """A screen in parts writes a month-wide type's line inputs (``RuleType.line_inputs``) and
    not every line's columns for it: its query reads the lines through its inputs only (but for
    a prefilter named ``lines``, which it may read past), and each input is a query over the
    engine's names."""
    with_inputs = [rt for rt in REGISTRY.values() if rt.line_inputs]
    assert with_inputs
    for rt in with_inputs:
        if "lines" not in rt.line_inputs:
            assert "__every_line__" not in rt.sql(engine.type_names(rt, lines="__every_line__")), rt.name
        for name, query in rt.line_inputs.items():
            assert "{lines}" in query, f"{rt.name}'s {name} reads no lines"
            textwrap.dedent(query).format(**engine.type_names(rt))


def test_peer_outlier_in_parts_is_peer_outlier_whole(tmp_path):
    """peer_outlier's part files hold each visit's amounts, not its lines (the bundled sample has
    no department large enough to flag): the same doctor is flagged with the same figures when
    the persons are screened in parts."""
    b = Batch()
    for k, share in enumerate([10, 20, 30, 40, 50, 90], start=1):
        drug_visits(b, f"DR{k}", share)
    out = {}
    for part_lines in (None, 4):
        con = loaded_db(b, tmp_path / f"t{part_lines}.duckdb", tmp_path / "batch")
        lib = load_library(write_rules(tmp_path / f"rules{part_lines}", DOCTOR_DRUG_SHARE))
        out[part_lines] = (screen(con, lib, part_lines=part_lines).n_parts, state(con))
        con.close()
    assert out[None][0] == 1 and out[4][0] == 6
    assert len(out[None][1]["findings"]) == 1
    assert out[None][1] == out[4][1]


def test_parts_read_the_settlements_of_their_persons(tmp_path):
    """The types of a part judge the visits that took place (a visit whose settlement was refunded
    did not) from the part's settlements, as a whole screen does from all: two persons with
    overlapping stays at two hospitals, one of them with the first stay refunded, give the same
    findings either way."""
    b = Batch()
    for p, refunded in (("PA", False), ("PB", True), ("PC", False), ("PD", False)):
        # the first stay (the one the later is judged against) refunded for PB: cancelled
        s1 = b.visit(mdtrt_id=f"{p}-1", psn_no=p, med_type="21", fixmedins_code="H001", refunded=refunded,
                     begntime="2026-03-02 08:00:00", endtime="2026-03-08 10:00:00")  # fmt: skip
        s2 = b.visit(mdtrt_id=f"{p}-2", psn_no=p, med_type="21", fixmedins_code="H002",
                     begntime="2026-03-04 08:00:00", endtime="2026-03-06 10:00:00")  # fmt: skip
        for v in (s1, s2):
            b.line(v, "001109000010000", bkkp_sn=f"{v}-L", time="2026-03-05 08:00:00")
    rules = """
        rules:
          - id: R-OVL
            version: 1
            name: 住院期间在其他机构重复住院
            type: overlapping_stays
            severity: suspect
            stages: [post_hoc]
            params: {kind: inpatient}
    """
    out = {}
    for part_lines in (None, 2):
        con = loaded_db(b, tmp_path / f"t{part_lines}.duckdb", tmp_path / "batch")
        lib = load_library(write_rules(tmp_path / f"rules{part_lines}", rules))
        n_parts = screen(con, lib, part_lines=part_lines).n_parts
        persons = sorted({p for (p,) in con.execute("SELECT psn_no FROM findings").fetchall()})
        out[part_lines] = (n_parts, persons, state(con))
        con.close()
    assert out[None][0] == 1 and out[2][0] >= 2
    assert out[None][1] == ["PA", "PC", "PD"]
    assert out[None][1:] == out[2][1:]


def test_inventory_in_parts_reads_the_lines_of_groups_over_stock_only(loaded, tmp_path, monkeypatch):
    """In parts, inventory_mismatch writes each part's sums and then reads the lines of the
    (institution, code, month)s billed over what was bought and held, and no others: counted
    here from the fee lines and purchases directly. Its findings equal one screen's (above)."""
    path = tmp_path / "inv.duckdb"
    shutil.copyfile(loaded, path)
    con = dbm.connect(path)
    read: list[tuple[int, int]] = []
    real = engine._lookup_lines

    def counted(con, rt, stage, folder):
        real(con, rt, stage, folder)
        read.append(
            con.execute(
                "SELECT count(*), count(DISTINCT (fixmedins_code, hilist_code, strftime(fee_date, '%Y-%m'))) FROM lines"
            ).fetchall()[0]
        )

    monkeypatch.setattr(engine, "_lookup_lines", counted)
    lib = load_library(RULES)
    n_fee = con.execute("SELECT count(*) FROM fee_list_d").fetchall()[0][0]
    assert screen(con, lib, "post_hoc", scope=Scope("all"), part_lines=-(-n_fee // 3)).n_parts == 3
    # the groups over stock, from the settled lines' net units (refunds taken back)
    expected = con.execute(
        """WITH net AS (
               SELECT f.fixmedins_code, f.hilist_code, strftime(f.fee_ocur_time, '%Y-%m') AS month,
                      f.cnt - coalesce(a.lq, 0) - coalesce(a.unq, 0) AS cnt
               FROM fee_list_d f LEFT JOIN (SELECT bkkp_sn, lq, unq FROM (
                   SELECT init_feedetl_sn AS bkkp_sn, -sum(cnt) AS lq, 0 AS unq FROM fee_list_d
                   WHERE cnt < 0 AND init_feedetl_sn IS NOT NULL GROUP BY 1)) a USING (bkkp_sn)
               JOIN setl_d s ON s.setl_id = f.setl_id AND coalesce(s.refd_setl_flag, '0') <> '1'
               WHERE f.cnt > 0 AND (f.fixmedins_code, f.hilist_code) IN (SELECT fixmedins_code, hilist_code FROM purchases)),
           g AS (SELECT fixmedins_code, hilist_code, month, sum(cnt) FILTER (WHERE cnt > 0) AS cnt, count(*) FILTER (WHERE cnt > 0) AS n
                 FROM net GROUP BY ALL),
           k AS (SELECT fixmedins_code, hilist_code, period, sum(purchase_cnt) AS b, sum(coalesce(opening_stock_cnt, 0)) AS o
                 FROM purchases GROUP BY ALL)
           SELECT count(*), sum(n) FROM g LEFT JOIN k ON k.fixmedins_code = g.fixmedins_code AND k.hilist_code = g.hilist_code
                                                     AND k.period = g.month
           WHERE (g.fixmedins_code, g.month) IN (SELECT fixmedins_code, period FROM purchases)
             AND g.cnt > coalesce(k.b, 0) + coalesce(k.o, 0)"""
    ).fetchall()[0]
    con.close()
    assert len(read) == 1
    lines, groups = read[0]
    assert groups == expected[0] and 0 < lines == expected[1] < n_fee / 10, (read, expected)


def test_a_line_input_whose_name_is_not_plain_is_refused():
    """A line input's name is also the name of its folder of part files, written into a COPY
    statement and a view: anything but plain characters is refused before it reaches SQL."""
    rt = dataclasses.replace(REGISTRY["peer_outlier"], name="x'); DROP TABLE findings; --")
    with pytest.raises(ValueError, match="not a plain name"):
        engine.line_input_name(rt, "visit_amounts")
    assert engine.line_input_name(REGISTRY["peer_outlier"], "visit_amounts") == "li_peer_outlier_visit_amounts"
