"""Attacks on the loader, one class each: hostile column names, unicode digits, CRLF re-exports,
natural keys of every table, fee lines that disagree with their visit, refund links, unlinked
refunds, amounts that are not cnt x pric, and a failure in the middle of a load."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl
import pytest

from kit import Batch, findings, write_rules
from medaudit import db, loader
from medaudit.engine import screen
from medaudit.library import load_library
from medaudit.loader import LoadError, load_batch

BED = "001109000010000"
HOSTILE = "y\" varchar; commit; drop table findings; copy (select 42) to 'x.csv'; begin transaction; --"


def small_batch() -> Batch:
    b = Batch()
    v1 = b.visit(mdtrt_id="V1", psn_no="P1")
    v2 = b.visit(mdtrt_id="V2", psn_no="P2", fixmedins_code="H002")
    b.line(v1, BED, bkkp_sn="F1", pric="30")
    b.line(v1, "XA01ABD075A002010100483", bkkp_sn="F2", cnt="2", pric="1.25")
    b.line(v2, BED, bkkp_sn="F3", pric="30")
    b.diag(v1, "J18.900")
    return b


def rejected(con, table=None) -> list[tuple]:
    q = "SELECT file, row_no, column_name, value, reason FROM rejected_rows"
    q += f" WHERE table_name = '{table}'" if table else ""
    return con.execute(q + " ORDER BY batch_id, file, row_no, column_name").fetchall()


def summary(res) -> dict[str, tuple[int, int, int]]:
    return {s.table: (s.read, s.loaded, s.rejected) for s in res.tables}


def dump(con) -> dict:
    """Every table of the database with its columns and all its rows, sorted."""
    out = {}
    for (t,) in con.execute("SELECT table_name FROM information_schema.tables ORDER BY 1").fetchall():
        cols = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ? ORDER BY ordinal_position",
            [t],
        ).fetchall()
        rows = con.execute(f'SELECT * FROM "{t}"').fetchall()
        out[t] = (cols, sorted(map(repr, rows)))
    return out


# ---------------------------------------------------------------------------- hostile column names


def _frames(folder: Path) -> dict[str, pl.DataFrame]:
    return {f.stem: pl.read_csv(f, infer_schema=False) for f in folder.glob("*.csv")}


def _write_xlsx(path: Path, df: pl.DataFrame) -> None:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(df.columns)
    for r in df.iter_rows():
        ws.append(list(r))
    wb.save(path)


@pytest.mark.parametrize("fmt", ["csv", "parquet", "xlsx", "parquet-in-file"])
def test_sql_in_a_column_name_is_ignored_not_run(tmp_path, monkeypatch, fmt):
    """``parquet-in-file``: the stage in a table of the database file, as a file too big for
    memory is staged (``loader._stage_in_file``)."""
    monkeypatch.chdir(tmp_path)  # where `copy ... to 'x.csv'` would write
    if fmt == "parquet-in-file":
        monkeypatch.setattr(loader, "STAGED_BYTES_PER_CELL", 10**12)
        fmt = "parquet"
    src = small_batch().write(tmp_path / "src")
    folder = tmp_path / "b"
    folder.mkdir()
    for name, df in _frames(src).items():
        if name == "fee_list_d":
            df = df.with_columns(pl.lit("1").alias(HOSTILE))
        if fmt == "csv":
            df.write_csv(folder / f"{name}.csv")
        elif fmt == "parquet":
            df.write_parquet(folder / f"{name}.parquet")
        else:
            _write_xlsx(folder / f"{name}.xlsx", df)
    con = db.connect(tmp_path / "t.duckdb")
    res = load_batch(folder, con)
    assert summary(res)["fee_list_d"] == (3, 3, 0)
    fee = next(s for s in res.tables if s.table == "fee_list_d")
    assert len(fee.ignored_columns) == 1 and "drop table findings" in fee.ignored_columns[0]
    assert not (tmp_path / "x.csv").exists()
    assert con.execute("SELECT count(*) FROM findings").fetchall() == [(0,)]  # the table is still there
    cols = [r[0] for r in con.execute("DESCRIBE fee_list_d").fetchall()]
    assert not any("drop" in c for c in cols)
    assert con.execute("SELECT count(*) FROM load_log").fetchall() == [(1,)]


def test_ident_refuses_anything_but_a_plain_name():
    assert db.ident("fee_list_d") == '"fee_list_d"'
    for bad in (HOSTILE, 'a"b', "A", "", "1a", "a b", "a;--"):
        with pytest.raises(ValueError):
            db.ident(bad)


# ---------------------------------------------------------------------------- unicode digits


def test_full_width_digits_are_normalised_and_other_scripts_rejected(tmp_path):
    b = small_batch()
    b.line("V1", BED, bkkp_sn="F4", cnt="２", pric="１２３.００", det_item_fee_sumamt="２４６")
    b.line("V1", BED, bkkp_sn="F5", cnt="٣", pric="10", det_item_fee_sumamt="30")  # Arabic-Indic 3
    b.line("V1", BED, bkkp_sn="F6", time="٢٠٢٦-03-02 08:00:00")
    b.line("V1", "ＸA01ABD075A002010100483", bkkp_sn="Ｆ7")  # full-width letters in codes
    con = db.connect(tmp_path / "t.duckdb")
    res = load_batch(b.write(tmp_path / "b"), con)
    assert con.execute("SELECT cnt, pric, det_item_fee_sumamt FROM fee_list_d WHERE bkkp_sn = 'F4'").fetchall() == [
        (Decimal("2"), Decimal("123"), Decimal("246"))
    ]
    assert con.execute("SELECT hilist_code FROM fee_list_d WHERE bkkp_sn = 'F7'").fetchall() == [
        ("XA01ABD075A002010100483",)
    ]
    assert rejected(con) == [
        ("fee_list_d.csv", 6, "cnt", "٣", 'cnt: "٣" is not a number'),
        (
            "fee_list_d.csv",
            7,
            "fee_ocur_time",
            "٢٠٢٦-03-02 08:00:00",
            'fee_ocur_time: "٢٠٢٦-03-02 08:00:00" is not a time (YYYY-MM-DD HH:MM:SS)',
        ),
    ]
    fee = next(s for s in res.tables if s.table == "fee_list_d")
    assert (fee.read, fee.loaded, fee.rejected, fee.normalised) == (7, 5, 2, 5)
    assert con.execute("SELECT count(*) FROM fee_list_d WHERE cnt IS NULL OR pric IS NULL").fetchall() == [(0,)]


# ---------------------------------------------------------------------------- re-loads


def test_a_crlf_re_export_is_the_same_batch(tmp_path):
    b = small_batch()
    b.add(
        "purchases", fixmedins_code="H001", hilist_code="XA01ABD075A002010100483", period="2026-03", purchase_cnt="10"
    )
    b.add("psn_death", psn_no="P1", die_date="2026-04-01")
    b.add("hilist", hilist_code=BED, hilist_name="床位费", begndate="2026-01-01")
    folder = b.write(tmp_path / "b")
    con = db.connect(tmp_path / "t.duckdb")
    load_batch(folder, con)
    before = dump(con)
    for enc in ("utf-8", "utf-8-sig", "gb18030"):
        copy = tmp_path / f"crlf-{enc}"
        copy.mkdir()
        for f in folder.iterdir():
            (copy / f.name).write_bytes(f.read_text(encoding="utf-8").replace("\n", "\r\n").encode(enc))
        again = load_batch(copy, con)
        assert again.already_loaded and again.batch_id == 1
    assert dump(con) == before


ROWS = {
    "purchases": (
        dict(fixmedins_code="H001", hilist_code=BED, period="2026-03", purchase_cnt="10"),
        "fixmedins_code, hilist_code, period",
        f"H001 / {BED} / 2026-03",
    ),
    "setl_list_diag_d": (
        dict(mdtrt_id="V1", diag_code="I10.x00", maindiag_flag="0"),
        "mdtrt_id, diag_code, diag_type",
        "V1 / I10.x00 / (empty)",
    ),
    "psn_death": (dict(psn_no="P1", die_date="2026-04-01"), "psn_no", "P1"),
    "hilist": (
        dict(hilist_code=BED, hilist_name="床位费", begndate="2026-01-01"),
        "hilist_code, begndate",
        f"{BED} / 2026-01-01",
    ),
    "setl_list_oprn_d": (
        dict(mdtrt_id="V1", oprn_oprt_code="13.4100x001", oprn_oprt_date="2026-03-02 09:00:00"),
        "mdtrt_id, oprn_oprt_code, oprn_oprt_date",
        "V1 / 13.4100x001 / 2026-03-02 09:00:00",
    ),
}


@pytest.mark.parametrize("table", sorted(ROWS))
def test_every_table_has_a_natural_key_in_the_file_and_across_batches(tmp_path, table):
    row, label, value = ROWS[table]
    b = small_batch()
    n = len(b.rows[table])  # rows already there (a diagnosis of V1)
    b.add(table, **row)
    b.add(table, **row)  # the same key twice in one file
    con = db.connect(tmp_path / "t.duckdb")
    res = load_batch(b.write(tmp_path / "b1"), con)
    assert rejected(con, table) == [(f"{table}.csv", n + 3, label, value, f"{label}: duplicate of row {n + 2}")]
    assert summary(res)[table] == (n + 2, n + 1, 1)
    # a later batch (a CRLF re-export with one more visit, so not the same content) repeats it
    b2 = Batch()
    b2.visit(mdtrt_id="V9", psn_no="P9")
    b2.add(table, **row)
    folder = b2.write(tmp_path / "b2")
    for f in folder.iterdir():
        f.write_bytes(f.read_bytes().replace(b"\n", b"\r\n"))
    res2 = load_batch(folder, con)
    assert summary(res2)[table] == (1, 0, 1)
    assert rejected(con, table)[-1] == (
        f"{table}.csv",
        2,
        label,
        value,
        f"{label}: {value} was already loaded in batch 1",
    )
    assert con.execute(f"SELECT count(*) FROM {table}").fetchall() == [(n + 1,)]


# ---------------------------------------------------------------------------- fee line vs its visit


def test_a_line_that_disagrees_with_its_visit_is_rejected(tmp_path):
    b = small_batch()
    b.line("V1", BED, bkkp_sn="L1", fixmedins_code="H002")
    b.line("V1", BED, bkkp_sn="L2", psn_no="P2")
    b.line("V1", BED, bkkp_sn="L3", setl_id="SV2")  # V2's settlement
    b.line("V1", BED, bkkp_sn="L4", setl_id="")  # not settled yet: fine
    b.line("V1", BED, bkkp_sn="L5", setl_id="S-LATER")  # settlement not loaded (yet): loads, listed
    b.add(
        "setl_d",
        setl_id="SX",
        mdtrt_id="V1",
        psn_no="P1",
        fixmedins_code="H009",
        setl_time="2026-03-02 10:00:00",
        medfee_sumamt="0",
        fund_pay_sumamt="0",
    )
    con = db.connect(tmp_path / "t.duckdb")
    res = load_batch(b.write(tmp_path / "b"), con)
    assert rejected(con) == [
        ("fee_list_d.csv", 5, "fixmedins_code", "H002", "fixmedins_code: H002 differs from its visit V1 (H001)"),
        ("fee_list_d.csv", 6, "psn_no", "P2", "psn_no: P2 differs from its visit V1 (P1)"),
        ("fee_list_d.csv", 7, "setl_id", "SV2", "setl_id: SV2 is a settlement of visit V2, not V1"),
        ("setl_d.csv", 4, "fixmedins_code", "H009", "fixmedins_code: H009 differs from its visit V1 (H001)"),
    ]
    assert summary(res)["fee_list_d"] == (8, 5, 3)
    assert con.execute(
        "SELECT bkkp_sn, setl_id FROM fee_list_d WHERE bkkp_sn IN ('L4', 'L5') ORDER BY 1"
    ).fetchall() == [
        ("L4", None),
        ("L5", "S-LATER"),
    ]
    assert con.execute("SELECT row_no, row_key, reason FROM data_quality").fetchall() == [
        (9, "L5", "setl_id: S-LATER not found in setl_d (loaded: the settlement may come in a later batch)"),
    ]


def test_a_line_of_a_visit_from_an_earlier_batch_is_checked_against_it(tmp_path):
    con = db.connect(tmp_path / "t.duckdb")
    load_batch(small_batch().write(tmp_path / "b1"), con)
    b = Batch()
    b.visit(mdtrt_id="V9")
    b.add(
        "fee_list_d",
        bkkp_sn="L9",
        mdtrt_id="V2",
        setl_id="SV1",
        psn_no="P2",
        fixmedins_code="H001",
        fee_ocur_time="2026-03-02",
        hilist_code=BED,
        list_type="201",
        cnt="1",
        pric="30",
        det_item_fee_sumamt="30",
    )
    load_batch(b.write(tmp_path / "b2"), con)
    assert [r[4] for r in rejected(con)] == [
        "fixmedins_code: H001 differs from its visit V2 (H002)",
        "setl_id: SV1 is a settlement of visit V1, not V2",
    ]


#: a price cap of 20 on the bed-day code, at the in-process and post-hoc stages
BED_PRICE_CAP = """
- id: R-PRC-001
  version: 1
  name: 超标准收费
  type: price_cap
  stages: [in_process, post_hoc]
  items:
    rows:
      - {code: "001109000010000", cap: 20}
"""


def test_unsettled_lines_screen_without_crash_and_are_not_flagged_post_hoc(tmp_path):
    b = Batch()
    v = b.visit(mdtrt_id="V1", settled=False, endtime="")
    b.line(v, BED, bkkp_sn="U1", pric="30", setl_id="")
    w = b.visit(mdtrt_id="V2")
    b.line(w, BED, bkkp_sn="S1", pric="30")
    con = db.connect(tmp_path / "t.duckdb")
    load_batch(b.write(tmp_path / "b"), con)
    assert con.execute("SELECT bkkp_sn, setl_id FROM fee_list_d ORDER BY 1").fetchall() == [("S1", "SV2"), ("U1", None)]
    screen(con, load_library(write_rules(tmp_path / "rules", BED_PRICE_CAP)), stage="post_hoc")
    assert [f["mdtrt_id"] for f in findings(con)] == ["V2"]


def test_unsettled_lines_are_screened_in_process_beside_a_refunded_settlement(tmp_path):
    """A line of a stay not settled yet (empty setl_id) is screened in-process even when the
    database holds a refunded settlement (a NOT IN over NULL used to drop every such line)."""
    b = Batch()
    v = b.visit(mdtrt_id="V1", settled=False, endtime="")
    b.line(v, BED, bkkp_sn="U1", pric="30", setl_id="")
    w = b.visit(mdtrt_id="V2", refunded=True)
    b.line(w, BED, bkkp_sn="S1", pric="30")
    found = b.screen(tmp_path, BED_PRICE_CAP, stage="in_process")
    assert [(f["mdtrt_id"], f["violating"]) for f in found] == [("V1", {"U1": Decimal("10")})]


# ---------------------------------------------------------------------------- refunds


def test_refund_links_same_visit_same_code_never_more_than_left(tmp_path):
    b = small_batch()
    b.line("V1", BED, bkkp_sn="L9", cnt="1", pric="30")
    b.line("V2", BED, bkkp_sn="R1", cnt="-1", pric="30", init_feedetl_sn="F1")  # F1 is V1's
    b.line("V1", "002503010010000", bkkp_sn="R2", cnt="-1", pric="30", init_feedetl_sn="F1")  # another code
    b.line("V1", BED, bkkp_sn="R3", cnt="-50", pric="30", init_feedetl_sn="L9")
    b.line("V1", "XA01ABD075A002010100483", bkkp_sn="R4", cnt="-1", pric="1.25", init_feedetl_sn="F2")  # 1 of 2: fine
    b.line(
        "V1", "XA01ABD075A002010100483", bkkp_sn="R5", cnt="-2", pric="1.25", init_feedetl_sn="F2"
    )  # 2 of the 1 left
    b.line(
        "V1", "XA01ABD075A002010100483", bkkp_sn="R6", cnt="-1", pric="1.25", init_feedetl_sn="F2"
    )  # the last 1: fine
    con = db.connect(tmp_path / "t.duckdb")
    load_batch(b.write(tmp_path / "b"), con)
    assert [(r[1], r[4]) for r in rejected(con)] == [
        (6, "init_feedetl_sn: F1 is a line of visit V1, not V2"),
        (7, f"init_feedetl_sn: F1 is a line of code {BED}, not 002503010010000"),
        (8, "init_feedetl_sn: refunds 50 units of L9 but only 1 is left"),
        (10, "init_feedetl_sn: refunds 2 units of F2 but only 1 is left"),
    ]
    assert con.execute("SELECT bkkp_sn FROM fee_list_d WHERE cnt < 0 ORDER BY 1").fetchall() == [("R4",), ("R6",)]
    # a later batch: F2 is fully refunded, F1 still has its 1 unit
    b2 = Batch()
    b2.visit(mdtrt_id="V8")
    for sn, orig, code in (("R7", "F2", "XA01ABD075A002010100483"), ("R8", "F1", BED)):
        b2.add(
            "fee_list_d",
            bkkp_sn=sn,
            mdtrt_id="V1",
            setl_id="SV1",
            psn_no="P1",
            fixmedins_code="H001",
            fee_ocur_time="2026-03-02 08:00:00",
            hilist_code=code,
            list_type="201",
            cnt="-1",
            pric="1",
            det_item_fee_sumamt="-1",
            init_feedetl_sn=orig,
        )
    load_batch(b2.write(tmp_path / "b2"), con)
    assert [r[4] for r in rejected(con)][-1:] == ["init_feedetl_sn: refunds 1 units of F2 but only 0 is left"]
    assert con.execute("SELECT bkkp_sn FROM fee_list_d WHERE batch_id = 2").fetchall() == [("R8",)]


def test_an_unlinked_refund_of_nothing_is_rejected(tmp_path):
    b = small_batch()
    b.line("V1", BED, bkkp_sn="U1", cnt="-1", pric="30")  # same visit, code and day as F1: fine
    b.line("V1", BED, bkkp_sn="U2", cnt="-2", pric="30", time="2026-03-05 08:00:00")  # another day: nothing
    b.line("V1", "004", bkkp_sn="U3", cnt="-1", pric="5")  # a code never billed
    con = db.connect(tmp_path / "t.duckdb")
    res = load_batch(b.write(tmp_path / "b"), con)
    assert [(r[1], r[2], r[3], r[4]) for r in rejected(con)] == [
        (6, "cnt", "-2", f"cnt: -2 refunds nothing: visit V1 has no line of code {BED} on 2026-03-05"),
        (7, "cnt", "-1", "cnt: -1 refunds nothing: visit V1 has no line of code 004 on 2026-03-02"),
    ]
    assert summary(res)["fee_list_d"] == (6, 4, 2)
    # matched by a line of an earlier batch
    b2 = Batch()
    b2.visit(mdtrt_id="V8")
    b2.add(
        "fee_list_d",
        bkkp_sn="U4",
        mdtrt_id="V1",
        setl_id="SV1",
        psn_no="P1",
        fixmedins_code="H001",
        fee_ocur_time="2026-03-02 12:00:00",
        hilist_code=BED,
        list_type="201",
        cnt="-1",
        pric="30",
        det_item_fee_sumamt="-30",
    )
    assert summary(load_batch(b2.write(tmp_path / "b2"), con))["fee_list_d"] == (1, 1, 0)


# ---------------------------------------------------------------------------- data quality


def test_an_amount_that_is_not_cnt_times_pric_loads_and_is_listed(tmp_path):
    b = small_batch()
    b.line("V1", BED, bkkp_sn="A1", cnt="2", pric="15", det_item_fee_sumamt="35")
    b.line("V1", BED, bkkp_sn="A2", cnt="3", pric="0.333", det_item_fee_sumamt="1")  # 0.999: within 0.01
    con = db.connect(tmp_path / "t.duckdb")
    res = load_batch(b.write(tmp_path / "b"), con)
    assert summary(res)["fee_list_d"] == (5, 5, 0)
    assert next(s for s in res.tables if s.table == "fee_list_d").data_quality == 1
    assert con.execute(
        "SELECT file, table_name, row_no, row_key, column_name, value, reason FROM data_quality"
    ).fetchall() == [
        (
            "fee_list_d.csv",
            "fee_list_d",
            5,
            "A1",
            "det_item_fee_sumamt",
            "35",
            "det_item_fee_sumamt: 35 differs from cnt × pric = 2 × 15 = 30",
        ),
    ]


def test_cli_load_prints_ignored_columns_and_data_quality(tmp_path):
    from typer.testing import CliRunner

    from medaudit.cli import app

    b = small_batch()
    b.line("V1", BED, bkkp_sn="A1", cnt="2", pric="15", det_item_fee_sumamt="35", **{"[red]note": "x"})
    out = CliRunner().invoke(app, ["load", str(b.write(tmp_path / "b")), "--db", str(tmp_path / "t.duckdb")])
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert "fee_list_d.csv: ignored columns (not in the data contract, not stored): [red]note" in text
    assert "det_item_fee_sumamt: 35 differs from cnt × pric" in text


# ---------------------------------------------------------------------------- one transaction


def test_a_failure_mid_insert_leaves_the_database_exactly_as_it_was(tmp_path, monkeypatch):
    con = db.connect(tmp_path / "t.duckdb")
    load_batch(small_batch().write(tmp_path / "b1"), con)
    before = dump(con)
    b = Batch()
    v = b.visit(mdtrt_id="V7", psn_no="P7")
    b.line(v, BED, bkkp_sn="N1")
    b.add("purchases", fixmedins_code="H001", hilist_code=BED, period="2026-03", purchase_cnt="10")
    real = loader._insert
    calls = []

    def failing(con, c, batch_id):
        calls.append(c.table.name)
        if c.table.name == "fee_list_d":  # mdtrt_d and setl_d are already in
            raise RuntimeError("disk full")
        real(con, c, batch_id)

    monkeypatch.setattr(loader, "_insert", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        load_batch(b.write(tmp_path / "b2"), con)
    assert calls == ["mdtrt_d", "setl_d", "fee_list_d"]
    assert dump(con) == before


def test_the_schema_is_part_of_the_transaction(tmp_path, monkeypatch):
    con = duckdb.connect(str(tmp_path / "raw.duckdb"))  # no schema yet
    monkeypatch.setattr(loader, "_insert", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError):
        load_batch(small_batch().write(tmp_path / "b"), con)
    assert con.execute("SELECT count(*) FROM information_schema.tables").fetchall() == [(0,)]


def test_a_required_null_after_the_inserts_undoes_the_load(tmp_path, monkeypatch):
    """The NULL check is a query on what was written, not an assumption about the frames."""
    con = db.connect(tmp_path / "t.duckdb")
    before = dump(con)
    real = loader._insert

    def corrupting(con, c, batch_id):
        real(con, c, batch_id)
        if c.table.name == "fee_list_d":
            con.execute("UPDATE fee_list_d SET hilist_code = NULL WHERE bkkp_sn = 'F2'")

    monkeypatch.setattr(loader, "_insert", corrupting)
    folder = small_batch().write(tmp_path / "b")
    with pytest.raises(LoadError) as e:
        load_batch(folder, con)
    assert str(e.value).startswith(
        f"{folder / 'fee_list_d.csv'}: 1 row(s) would load with the required column hilist_code empty"
    )
    assert dump(con) == before


def test_sql_in_cells_staged_in_the_database_file_is_kept_as_text(tmp_path, monkeypatch):
    """A file too big for memory is staged in a table of the database file: hostile text in its
    cells is stored as text, nothing of it runs, and the stage is gone after the commit."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(loader, "STAGED_BYTES_PER_CELL", 10**12)
    b = small_batch()
    b.rows["fee_list_d"][0]["hilist_name"] = HOSTILE
    b.rows["mdtrt_d"][0]["psn_name"] = HOSTILE
    src = b.write(tmp_path / "src")
    folder = tmp_path / "b"
    folder.mkdir()
    for name, df in _frames(src).items():
        df.write_parquet(folder / f"{name}.parquet")
    con = db.connect(tmp_path / "t.duckdb")
    load_batch(folder, con)
    assert con.execute("SELECT hilist_name FROM fee_list_d WHERE bkkp_sn = 'F1'").fetchall() == [(HOSTILE,)]
    assert con.execute("SELECT psn_name FROM mdtrt_d WHERE mdtrt_id = 'V1'").fetchall() == [(HOSTILE,)]
    assert not (tmp_path / "x.csv").exists()
    assert con.execute("SELECT count(*) FROM findings").fetchall() == [(0,)]
    assert con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE NOT temporary AND starts_with(table_name, '__s_')"
    ).fetchall() == [(0,)]
