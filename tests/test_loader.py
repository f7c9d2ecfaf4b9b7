"""The loader against the data contract's "Bad input" section.

Every case goes through ``load_batch`` on real files in ``tmp_path``; messages are asserted
exactly, because a clerk reads them to fix the extract.
"""

from __future__ import annotations

import csv
import io
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest

from kit import Batch
from medaudit import db
from medaudit.engine import prepare_lines
from medaudit.loader import LoadError, load_batch

BED = "001109000010000"  # leading zeros must survive every format


def small_batch() -> Batch:
    b = Batch()
    v1 = b.visit(mdtrt_id="V1", psn_no="P1", psn_name="张三", fixmedins_name="北京协和医院")
    v2 = b.visit(mdtrt_id="V2", psn_no="P2", psn_name="李四")
    b.line(v1, BED, bkkp_sn="F1", hilist_name="普通病房床位费", pric="30")
    b.line(v1, "XA01ABD075A002010100483", bkkp_sn="F2", hilist_name="阿莫西林胶囊", cnt="2", pric="1.25")
    b.line(v2, BED, bkkp_sn="F3", hilist_name="普通病房床位费", pric="30")
    b.diag(v1, "J18.900")
    return b


def write_csv(path: Path, header: list[str], rows: list[list[str]], encoding="utf-8") -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    path.write_bytes(buf.getvalue().encode(encoding))


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    return rows[0], rows[1:]


def edit(path: Path, row: int, column: str, value: str) -> None:
    """Set one cell; ``row`` counts the header as row 1, as the loader's messages do."""
    header, rows = read_rows(path)
    rows[row - 2][header.index(column)] = value
    write_csv(path, header, rows)


def con_at(tmp_path: Path, name="t.duckdb"):
    return db.connect(tmp_path / name)


def counts(con) -> dict[str, int]:
    out = {}
    for t in ("mdtrt_d", "setl_d", "fee_list_d", "setl_list_diag_d", "load_log", "rejected_rows"):
        out[t] = con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
    return out


def rejected(con) -> list[tuple]:
    return con.execute(
        "SELECT file, row_no, column_name, value, reason FROM rejected_rows ORDER BY file, row_no, column_name"
    ).fetchall()


def summary(result) -> dict[str, tuple[int, int, int]]:
    return {s.table: (s.read, s.loaded, s.rejected) for s in result.tables}


# ---------------------------------------------------------------------------- formats


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gb18030"])
def test_csv_encodings_load_the_same_rows(tmp_path, encoding):
    folder = small_batch().write(tmp_path / "b")
    for f in folder.glob("*.csv"):
        f.write_bytes(f.read_text(encoding="utf-8").encode(encoding))
    con = con_at(tmp_path)
    res = load_batch(folder, con)
    assert summary(res)["mdtrt_d"] == (2, 2, 0)
    assert summary(res)["fee_list_d"] == (3, 3, 0)
    assert con.execute("SELECT mdtrt_id, psn_name, fixmedins_name FROM mdtrt_d ORDER BY 1").fetchall() == [
        ("V1", "张三", "北京协和医院"),
        ("V2", "李四", "测试医院"),
    ]
    assert con.execute("SELECT hilist_name FROM fee_list_d WHERE bkkp_sn = 'F2'").fetchall() == [("阿莫西林胶囊",)]
    assert con.execute("SELECT hilist_code FROM fee_list_d WHERE bkkp_sn = 'F1'").fetchall() == [(BED,)]


def _as_frames(folder: Path) -> dict[str, pl.DataFrame]:
    return {f.stem: pl.read_csv(f, infer_schema=False) for f in folder.glob("*.csv")}


def test_parquet_loads_with_codes_intact(tmp_path):
    src = small_batch().write(tmp_path / "csv")
    folder = tmp_path / "pq"
    folder.mkdir()
    for name, df in _as_frames(src).items():
        if name == "fee_list_d":  # typed columns, as a warehouse export would have them
            df = df.with_columns(
                pl.col("fee_ocur_time").str.to_datetime("%Y-%m-%d %H:%M:%S"),
                pl.col("cnt", "pric", "det_item_fee_sumamt").cast(pl.Decimal(18, 4)),
            )
        if name == "mdtrt_d":
            df = df.with_columns(pl.col("brdy").str.to_date())
        df.write_parquet(folder / f"{name}.parquet")
    con = con_at(tmp_path)
    res = load_batch(folder, con)
    assert summary(res)["fee_list_d"] == (3, 3, 0)
    assert con.execute(
        "SELECT hilist_code, cnt, pric, fee_ocur_time::VARCHAR FROM fee_list_d WHERE bkkp_sn='F2'"
    ).fetchall() == [("XA01ABD075A002010100483", Decimal("2.0000"), Decimal("1.2500"), "2026-03-02 08:00:00")]
    assert con.execute("SELECT brdy::VARCHAR, psn_name FROM mdtrt_d WHERE mdtrt_id='V1'").fetchall() == [
        ("1980-05-05", "张三")
    ]
    assert con.execute("SELECT hilist_code FROM fee_list_d WHERE bkkp_sn='F1'").fetchall() == [(BED,)]


def _write_xlsx(path: Path, header: list[str], rows: list[list]) -> None:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(header)
    for r in rows:
        ws.append(r)
    wb.save(path)


def test_xlsx_text_codes_dates_and_float_cells(tmp_path):
    """Codes typed as text cells keep their zeros; Excel dates and numbers become contract text."""
    import datetime as dt

    src = small_batch().write(tmp_path / "csv")
    folder = tmp_path / "x"
    folder.mkdir()
    for name in ("mdtrt_d", "setl_d", "setl_list_diag_d"):
        header, rows = read_rows(src / f"{name}.csv")
        _write_xlsx(folder / f"{name}.xlsx", header, rows)
    header, rows = read_rows(src / "fee_list_d.csv")
    typed = []
    for r in rows:
        rec = dict(zip(header, r))
        rec["fee_ocur_time"] = dt.datetime.fromisoformat(rec["fee_ocur_time"])  # a real Excel date cell
        rec["cnt"] = float(rec["cnt"])
        rec["pric"] = float(rec["pric"])
        rec["det_item_fee_sumamt"] = 0.1 + 0.2 if rec["bkkp_sn"] == "F3" else float(rec["det_item_fee_sumamt"])
        typed.append([rec[h] for h in header])
    _write_xlsx(folder / "fee_list_d.xlsx", header, typed + [[None] * len(header)] * 3)  # formatted empty rows
    con = con_at(tmp_path)
    res = load_batch(folder, con)
    assert summary(res)["fee_list_d"] == (3, 3, 0)
    assert con.execute(
        "SELECT bkkp_sn, hilist_code, cnt, pric, det_item_fee_sumamt, fee_ocur_time::VARCHAR FROM fee_list_d ORDER BY 1"
    ).fetchall() == [
        ("F1", BED, Decimal("1.0000"), Decimal("30.0000"), Decimal("30.0000"), "2026-03-02 08:00:00"),
        (
            "F2",
            "XA01ABD075A002010100483",
            Decimal("2.0000"),
            Decimal("1.2500"),
            Decimal("2.5000"),
            "2026-03-02 08:00:00",
        ),
        ("F3", BED, Decimal("1.0000"), Decimal("30.0000"), Decimal("0.3000"), "2026-03-02 08:00:00"),
    ]


def test_xlsx_and_parquet_number_codes_get_their_zeros_back(tmp_path):
    """Excel turns 001109000010000 into 1109000010000 and 05 into 5; the loader undoes it where the
    national format makes it unambiguous (service codes are 15 digits; dictionaries 2)."""
    src = small_batch().write(tmp_path / "csv")
    folder = tmp_path / "x"
    folder.mkdir()
    for name in ("setl_d", "setl_list_diag_d"):
        header, rows = read_rows(src / f"{name}.csv")
        _write_xlsx(folder / f"{name}.xlsx", header, rows)
    header, rows = read_rows(src / "mdtrt_d.csv")
    for r in rows:
        r[header.index("hosp_lv")] = 5  # a number cell
        r[header.index("insutype")] = 310
    _write_xlsx(folder / "mdtrt_d.xlsx", header, rows)
    header, rows = read_rows(src / "fee_list_d.csv")
    for r in rows:
        if r[header.index("hilist_code")] == BED:
            r[header.index("hilist_code")] = int(BED)
        r[header.index("chrgitm_lv")] = 3.0
    _write_xlsx(folder / "fee_list_d.xlsx", header, rows)
    con = con_at(tmp_path)
    load_batch(folder, con)
    assert con.execute("SELECT DISTINCT hosp_lv, insutype FROM mdtrt_d").fetchall() == [("05", "310")]
    assert con.execute("SELECT bkkp_sn, hilist_code, chrgitm_lv FROM fee_list_d ORDER BY 1").fetchall() == [
        ("F1", BED, "03"),
        ("F2", "XA01ABD075A002010100483", "03"),
        ("F3", BED, "03"),
    ]

    pq = tmp_path / "pq"
    pq.mkdir()
    for name, df in _as_frames(src).items():
        if name == "mdtrt_d":
            df = df.with_columns(pl.lit(5).alias("hosp_lv"))
        if name == "setl_list_diag_d":
            df = df.with_columns(pl.lit(1).alias("maindiag_flag"))
        if name == "fee_list_d":
            df = df.filter(pl.col("hilist_code") == BED).with_columns(pl.col("hilist_code").cast(pl.Int64))
        df.write_parquet(pq / f"{name}.parquet")
    con2 = con_at(tmp_path, "pq.duckdb")
    load_batch(pq, con2)
    assert con2.execute("SELECT DISTINCT hosp_lv FROM mdtrt_d").fetchall() == [("05",)]
    assert con2.execute("SELECT DISTINCT hilist_code FROM fee_list_d").fetchall() == [(BED,)]
    assert con2.execute("SELECT DISTINCT maindiag_flag FROM setl_list_diag_d").fetchall() == [("1",)]


def test_one_digit_dictionary_codes_in_csv_are_padded(tmp_path):
    folder = small_batch().write(tmp_path / "b")
    edit(folder / "mdtrt_d.csv", 2, "hosp_lv", "5")
    edit(folder / "fee_list_d.csv", 2, "chrgitm_lv", "3")
    edit(folder / "fee_list_d.csv", 3, "med_chrgitm_type", "9")
    con = con_at(tmp_path)
    load_batch(folder, con)
    assert con.execute("SELECT mdtrt_id, hosp_lv FROM mdtrt_d ORDER BY 1").fetchall() == [("V1", "05"), ("V2", "05")]
    assert con.execute("SELECT bkkp_sn, chrgitm_lv, med_chrgitm_type FROM fee_list_d ORDER BY 1").fetchall() == [
        ("F1", "03", None),
        ("F2", "01", "09"),
        ("F3", "01", None),
    ]


def test_codes_keep_leading_zeros_in_csv(tmp_path):
    folder = small_batch().write(tmp_path / "b")
    con = con_at(tmp_path)
    load_batch(folder, con)
    assert con.execute("SELECT DISTINCT hilist_code FROM fee_list_d WHERE hilist_code LIKE '00%'").fetchall() == [
        (BED,)
    ]


def test_column_names_are_case_insensitive_and_extra_columns_are_dropped_and_listed(tmp_path):
    """Columns outside the contract are not stored (their names never reach SQL): the load
    summary lists them per file."""
    folder = small_batch().write(tmp_path / "b")
    header, rows = read_rows(folder / "fee_list_d.csv")
    header = [h.upper() if i % 2 else h.title() for i, h in enumerate(header)] + ["Hosp_Note"]
    rows = [r + [f"备注{i}"] for i, r in enumerate(rows)]
    write_csv(folder / "fee_list_d.csv", header, rows)
    (folder / "mdtrt_d.csv").rename(folder / "MDTRT_D.csv")
    con = con_at(tmp_path)
    res = load_batch(folder, con)
    assert summary(res)["fee_list_d"] == (3, 3, 0)
    assert summary(res)["mdtrt_d"] == (2, 2, 0)
    fee = next(s for s in res.tables if s.table == "fee_list_d")
    assert fee.ignored_columns == ["hosp_note"]
    assert "hosp_note" not in [r[0] for r in con.execute("DESCRIBE fee_list_d").fetchall()]


# ---------------------------------------------------------------------------- rejected rows


def test_bad_values_are_rejected_with_file_row_column_and_reason(tmp_path):
    folder = small_batch().write(tmp_path / "b")
    edit(folder / "mdtrt_d.csv", 3, "brdy", "1990-13-40")  # V2
    edit(folder / "fee_list_d.csv", 3, "cnt", "two")  # F2
    edit(folder / "fee_list_d.csv", 2, "pric", "30.12345")  # F1
    con = con_at(tmp_path)
    res = load_batch(folder, con)
    assert rejected(con) == [
        ("fee_list_d.csv", 2, "pric", "30.12345", 'pric: "30.12345" has more than 4 decimals or is too large'),
        ("fee_list_d.csv", 3, "cnt", "two", 'cnt: "two" is not a number'),
        (
            "fee_list_d.csv",
            4,
            "mdtrt_id",
            "V2",
            "mdtrt_id: V2 not found in mdtrt_d (its row 3 in mdtrt_d.csv was rejected)",
        ),
        ("mdtrt_d.csv", 3, "brdy", "1990-13-40", 'brdy: "1990-13-40" is not a date (YYYY-MM-DD)'),
        (
            "setl_d.csv",
            3,
            "mdtrt_id",
            "V2",
            "mdtrt_id: V2 not found in mdtrt_d (its row 3 in mdtrt_d.csv was rejected)",
        ),
    ]
    s = summary(res)
    assert s["mdtrt_d"] == (2, 1, 1) and s["setl_d"] == (2, 1, 1) and s["fee_list_d"] == (3, 0, 3)
    for read, loaded, rej in s.values():
        assert read == loaded + rej
    assert con.execute("SELECT count(*) FROM fee_list_d").fetchall() == [(0,)]
    assert con.execute("SELECT mdtrt_id FROM mdtrt_d").fetchall() == [("V1",)]


def test_a_row_with_two_problems_counts_once(tmp_path):
    folder = small_batch().write(tmp_path / "b")
    edit(folder / "fee_list_d.csv", 2, "cnt", "x")
    edit(folder / "fee_list_d.csv", 2, "fee_ocur_time", "2026-02-30 08:00:00")
    con = con_at(tmp_path)
    res = load_batch(folder, con)
    assert summary(res)["fee_list_d"] == (3, 2, 1)
    assert [r[4] for r in rejected(con)] == [
        'cnt: "x" is not a number',
        'fee_ocur_time: "2026-02-30 08:00:00" is not a time (YYYY-MM-DD HH:MM:SS)',
    ]


def test_required_value_missing_and_bad_gender(tmp_path):
    folder = small_batch().write(tmp_path / "b")
    edit(folder / "mdtrt_d.csv", 2, "gend", "M")
    edit(folder / "mdtrt_d.csv", 3, "psn_no", "  ")  # blank after trimming = missing
    con = con_at(tmp_path)
    load_batch(folder, con)
    got = [(r[0], r[1], r[4]) for r in rejected(con) if r[0] == "mdtrt_d.csv"]
    assert got == [
        ("mdtrt_d.csv", 2, 'gend: "M" is not one of 0, 1, 2, 9'),
        ("mdtrt_d.csv", 3, "psn_no: required value is missing"),
    ]


def test_duplicate_key_names_the_first_row(tmp_path):
    b = small_batch()
    b.line("V1", BED, bkkp_sn="F1", pric="31")  # a second F1, row 5 of fee_list_d.csv
    folder = b.write(tmp_path / "b")
    con = con_at(tmp_path)
    res = load_batch(folder, con)
    assert rejected(con) == [("fee_list_d.csv", 5, "bkkp_sn", "F1", "bkkp_sn: duplicate of row 2")]
    assert summary(res)["fee_list_d"] == (4, 3, 1)
    assert con.execute("SELECT pric FROM fee_list_d WHERE bkkp_sn='F1'").fetchall() == [(Decimal("30.0000"),)]


def test_orphan_line(tmp_path):
    b = small_batch()
    b.add(
        "fee_list_d",
        bkkp_sn="F9",
        mdtrt_id="V77",
        setl_id="SV77",
        psn_no="P9",
        fixmedins_code="H001",
        fee_ocur_time="2026-03-02",
        hilist_code=BED,
        list_type="201",
        cnt="1",
        pric="30",
        det_item_fee_sumamt="30",
    )
    b.add("setl_list_diag_d", mdtrt_id="V78", maindiag_flag="1", diag_code="J18.900")
    folder = b.write(tmp_path / "b")
    con = con_at(tmp_path)
    res = load_batch(folder, con)
    assert rejected(con) == [
        ("fee_list_d.csv", 5, "mdtrt_id", "V77", "mdtrt_id: V77 not found in mdtrt_d"),
        ("setl_list_diag_d.csv", 3, "mdtrt_id", "V78", "mdtrt_id: V78 not found in mdtrt_d"),
    ]
    assert summary(res)["fee_list_d"] == (4, 3, 1)
    assert summary(res)["setl_list_diag_d"] == (2, 1, 1)


def test_ragged_and_blank_rows_are_rejected_not_padded(tmp_path):
    folder = small_batch().write(tmp_path / "b")
    text = (folder / "fee_list_d.csv").read_text(encoding="utf-8").splitlines()
    n = len(text[0].split(","))
    text[1] = text[1] + ",extra"  # row 2: one field too many
    text[2] = text[2].rsplit(",", 1)[0]  # row 3: one field too few
    text.insert(3, "")  # row 4: blank between rows
    text.append("F9")  # row 6: a single field
    (folder / "fee_list_d.csv").write_text("\n".join(text) + "\n\n\n", encoding="utf-8")  # trailing blanks ignored
    con = con_at(tmp_path)
    res = load_batch(folder, con)
    assert rejected(con) == [
        ("fee_list_d.csv", 2, "", None, f"the row has {n + 1} fields, the header has {n}"),
        ("fee_list_d.csv", 3, "", None, f"the row has {n - 1} fields, the header has {n}"),
        ("fee_list_d.csv", 4, "", None, "the row is empty"),
        ("fee_list_d.csv", 6, "", None, f"the row has 1 field, the header has {n}"),
    ]
    assert summary(res)["fee_list_d"] == (5, 1, 4)
    assert con.execute("SELECT bkkp_sn, source_row FROM fee_list_d").fetchall() == [("F3", 5)]


def test_ragged_row_in_a_quoted_csv(tmp_path):
    folder = small_batch().write(tmp_path / "b")
    header, rows = read_rows(folder / "mdtrt_d.csv")
    rows[0][header.index("psn_name")] = '张,"三"'  # quoted: a comma and quotes inside one field
    write_csv(folder / "mdtrt_d.csv", header, rows)
    with open(folder / "mdtrt_d.csv", "a", encoding="utf-8") as fh:
        fh.write('V9,"P9",short\n')
    con = con_at(tmp_path)
    res = load_batch(folder, con)
    assert summary(res)["mdtrt_d"] == (3, 2, 1)
    assert rejected(con) == [("mdtrt_d.csv", 4, "", None, f"the row has 3 fields, the header has {len(header)}")]
    assert con.execute("SELECT psn_name FROM mdtrt_d WHERE mdtrt_id='V1'").fetchall() == [('张,"三"',)]


# ---------------------------------------------------------------------------- whole-load errors


def _assert_unchanged(con, before):
    assert counts(con) == before


def test_missing_required_column_stops_the_load_and_changes_nothing(tmp_path):
    con = con_at(tmp_path)
    load_batch(small_batch().write(tmp_path / "first"), con)
    before = counts(con)
    b = small_batch()
    for r in b.rows["fee_list_d"]:
        r["bkkp_sn"] = "N" + r["bkkp_sn"]
    for r in b.rows["mdtrt_d"]:
        r["mdtrt_id"] = "N" + r["mdtrt_id"]
    folder = b.write(tmp_path / "b")
    header, rows = read_rows(folder / "fee_list_d.csv")
    i = header.index("hilist_code")
    write_csv(folder / "fee_list_d.csv", header[:i] + header[i + 1 :], [r[:i] + r[i + 1 :] for r in rows])
    with pytest.raises(LoadError) as e:
        load_batch(folder, con)
    assert str(e.value) == f"{folder / 'fee_list_d.csv'}: required column hilist_code is missing"
    _assert_unchanged(con, before)


def test_missing_required_table(tmp_path):
    folder = small_batch().write(tmp_path / "b")
    (folder / "setl_d.csv").unlink()
    con = con_at(tmp_path)
    with pytest.raises(LoadError, match=r"required table setl_d is missing"):
        load_batch(folder, con)
    assert counts(con)["load_log"] == 0


@pytest.mark.parametrize(
    "name, content, message",
    [
        (
            "fee_list_d.csv",
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00",
            "binary content (NUL bytes), not a CSV text file",
        ),
        ("fee_list_d.csv", b"bkkp_sn,\xff\xfe\xfa\x80\x81\n", "not UTF-8 or GB18030 text (byte 8)"),
        ("fee_list_d.csv", b"", "the file is empty"),
        ("fee_list_d.csv", b"\r\n\r\n", "the file is empty"),
    ],
)
def test_unreadable_csv_stops_the_load(tmp_path, name, content, message):
    con = con_at(tmp_path)
    load_batch(small_batch().write(tmp_path / "first"), con)
    before = counts(con)
    folder = small_batch().write(tmp_path / "b")
    (folder / name).write_bytes(content)
    with pytest.raises(LoadError) as e:
        load_batch(folder, con)
    assert str(e.value) == f"{folder / name}: unreadable: {message}"
    _assert_unchanged(con, before)


@pytest.mark.parametrize("suffix", [".parquet", ".xlsx"])
def test_unreadable_binary_formats(tmp_path, suffix):
    folder = small_batch().write(tmp_path / "b")
    (folder / "fee_list_d.csv").unlink()
    (folder / f"fee_list_d{suffix}").write_bytes(b"this is not a real file" * 10)
    con = con_at(tmp_path)
    with pytest.raises(LoadError) as e:
        load_batch(folder, con)
    assert str(e.value).startswith(f"{folder / ('fee_list_d' + suffix)}: unreadable: ")
    assert counts(con)["mdtrt_d"] == 0 and counts(con)["load_log"] == 0


def test_header_only_file_loads_no_rows(tmp_path):
    folder = small_batch().write(tmp_path / "b")
    header, _rows = read_rows(folder / "setl_list_diag_d.csv")
    write_csv(folder / "setl_list_diag_d.csv", header, [])
    con = con_at(tmp_path)
    res = load_batch(folder, con)
    assert summary(res)["setl_list_diag_d"] == (0, 0, 0)


# ---------------------------------------------------------------------------- batches


def test_fee_lines_are_stored_by_month_then_person(tmp_path):
    """Within a batch the fee lines are stored by month, then person, then file row
    (``loader.CLUSTER``: a screen in parts and a night's run read row groups of their persons
    and months only), whatever the file's order; every line loads once."""
    b = Batch()
    va = b.visit(mdtrt_id="VA", psn_no="P9", begntime="2026-04-01 08:00:00", endtime="2026-04-30 08:00:00")
    vb = b.visit(mdtrt_id="VB", psn_no="P1", begntime="2026-03-01 08:00:00", endtime="2026-04-30 08:00:00")
    b.line(va, BED, bkkp_sn="L1", time="2026-04-03 08:00:00")
    b.line(vb, BED, bkkp_sn="L2", time="2026-04-02 08:00:00")
    b.line(vb, BED, bkkp_sn="L3", time="2026-03-05 08:00:00")
    b.line(va, BED, bkkp_sn="L4", time="2026-04-01 09:00:00")
    b.line(vb, BED, bkkp_sn="L5", time="2026-03-04 08:00:00")
    con = con_at(tmp_path)
    load_batch(b.write(tmp_path / "b"), con)
    stored = [r[0] for r in con.execute("SELECT bkkp_sn FROM fee_list_d ORDER BY rowid").fetchall()]
    # March: P1's lines in file order; April: P1's, then P9's in file order
    assert stored == ["L3", "L5", "L2", "L1", "L4"]


def test_same_batch_twice_is_detected_by_content(tmp_path):
    folder = small_batch().write(tmp_path / "b")
    con = con_at(tmp_path)
    first = load_batch(folder, con)
    before = counts(con)
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in folder.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    again = load_batch(copy, con)
    assert again.already_loaded and again.batch_id == first.batch_id == 1
    assert counts(con) == before


def test_second_batch_repeating_a_key_names_the_earlier_batch(tmp_path):
    con = con_at(tmp_path)
    load_batch(small_batch().write(tmp_path / "b1"), con)
    b = Batch()
    b.visit(mdtrt_id="V1", psn_no="P1")  # same visit id again
    v = b.visit(mdtrt_id="V3", psn_no="P3")
    b.line(v, BED, bkkp_sn="F1")  # same line id again
    b.line(v, BED, bkkp_sn="F4")
    b.line("V1", BED, bkkp_sn="F5")  # a new line of a visit from batch 1: fine
    res = load_batch(b.write(tmp_path / "b2"), con)
    assert res.batch_id == 2 and not res.already_loaded
    assert rejected(con) == [
        ("fee_list_d.csv", 2, "bkkp_sn", "F1", "bkkp_sn: F1 was already loaded in batch 1"),
        ("mdtrt_d.csv", 2, "mdtrt_id", "V1", "mdtrt_id: V1 was already loaded in batch 1"),
        ("setl_d.csv", 2, "setl_id", "SV1", "setl_id: SV1 was already loaded in batch 1"),
    ]
    assert con.execute("SELECT bkkp_sn, batch_id FROM fee_list_d ORDER BY 1").fetchall() == [
        ("F1", 1),
        ("F2", 1),
        ("F3", 1),
        ("F4", 2),
        ("F5", 2),
    ]
    assert summary(res) == {"mdtrt_d": (2, 1, 1), "setl_d": (2, 1, 1), "fee_list_d": (3, 2, 1)}


# ---------------------------------------------------------------------------- refunds in `lines`


def test_refund_netting_in_lines(tmp_path):
    b = Batch()
    v = b.visit(mdtrt_id="V1")
    b.line(v, BED, bkkp_sn="A", cnt="3", pric="30", fulamt_ownpay_amt="15")
    b.refund("A", cnt="-1", det_item_fee_sumamt="-30", fulamt_ownpay_amt="-5", bkkp_sn="A-R")  # linked, partial
    b.line(v, "002503010010000", bkkp_sn="B", pric="20")
    b.refund("B", bkkp_sn="B-R")  # linked, full: B disappears
    # unlinked: same visit, code and day; taken from the latest lines first
    b.line(v, "004", bkkp_sn="C1", cnt="2", pric="5", time="2026-03-02 08:00:00")
    b.line(v, "004", bkkp_sn="C2", cnt="1", pric="5", time="2026-03-02 09:00:00")
    b.line(v, "004", bkkp_sn="C3", cnt="1", pric="5", time="2026-03-03 09:00:00")  # another day: untouched
    b.line(v, "004", bkkp_sn="C-R", cnt="-2", pric="5", time="2026-03-02 20:00:00")
    # own-pay not stated on the refund (linked) or not attributable (unlinked): pro rata
    b.line(v, "005", bkkp_sn="D", cnt="3", pric="10", fulamt_ownpay_amt="12")
    b.refund("D", cnt="-1", det_item_fee_sumamt="-10", bkkp_sn="D-R")
    b.line(v, "006", bkkp_sn="E", cnt="4", pric="10", fulamt_ownpay_amt="10", time="2026-03-04 08:00:00")
    b.line(v, "006", bkkp_sn="E-R", cnt="-1", pric="10", fulamt_ownpay_amt="-9", time="2026-03-04 09:00:00")
    con = con_at(tmp_path)
    load_batch(b.write(tmp_path / "b"), con)
    prepare_lines(con, "post_hoc")
    got = con.execute("SELECT bkkp_sn, cnt, amt, ownpay, deductible FROM lines ORDER BY bkkp_sn").fetchall()
    D = Decimal
    assert got == [
        ("A", D("2"), D("60"), D("10"), D("50")),
        ("C1", D("1"), D("5"), D("0"), D("5")),
        ("C3", D("1"), D("5"), D("0"), D("5")),
        ("D", D("2"), D("20"), D("8"), D("12")),
        ("E", D("3"), D("30"), D("7.5"), D("22.5")),
    ]


def test_refunded_settlement_and_refund_lines_are_not_screened(tmp_path):
    b = Batch()
    v = b.visit(mdtrt_id="V1", refunded=True)
    b.line(v, BED, bkkp_sn="A")
    w = b.visit(mdtrt_id="V2", settled=False)
    b.line(w, BED, bkkp_sn="B")
    con = con_at(tmp_path)
    load_batch(b.write(tmp_path / "b"), con)
    assert prepare_lines(con, "post_hoc") == 0
    assert prepare_lines(con, "in_process") == 1
    assert con.execute("SELECT bkkp_sn FROM lines").fetchall() == [("B",)]


def test_resubmitting_a_corrected_batch_loads_only_the_fixed_rows(tmp_path):
    """The usual way a hospital fixes rejected rows: send the whole batch again, corrected."""
    folder = small_batch().write(tmp_path / "b")
    edit(folder / "fee_list_d.csv", 3, "cnt", "two")
    con = con_at(tmp_path)
    load_batch(folder, con)
    edit(folder / "fee_list_d.csv", 3, "cnt", "2")
    res = load_batch(folder, con)
    assert res.batch_id == 2 and not res.already_loaded
    assert summary(res)["fee_list_d"] == (3, 1, 2)
    assert con.execute("SELECT bkkp_sn, batch_id, cnt FROM fee_list_d ORDER BY 1").fetchall() == [
        ("F1", 1, Decimal("1")),
        ("F2", 2, Decimal("2")),
        ("F3", 1, Decimal("1")),
    ]
    assert con.execute(
        "SELECT reason FROM rejected_rows WHERE batch_id = 2 AND table_name = 'fee_list_d' ORDER BY row_no"
    ).fetchall() == [("bkkp_sn: F1 was already loaded in batch 1",), ("bkkp_sn: F3 was already loaded in batch 1",)]


def test_a_refund_of_an_unknown_or_rejected_line_is_rejected(tmp_path):
    con = con_at(tmp_path)
    load_batch(small_batch().write(tmp_path / "b1"), con)
    b = Batch()
    v = b.visit(mdtrt_id="V5", psn_no="P5")
    b.line(v, BED, bkkp_sn="G1", fee_ocur_time="2026-03-02 25:00:00")  # rejected: bad time
    b.line(v, BED, bkkp_sn="G1-R", cnt="-1", det_item_fee_sumamt="-10", init_feedetl_sn="G1")
    b.line(v, BED, bkkp_sn="G2-R", cnt="-1", det_item_fee_sumamt="-10", init_feedetl_sn="NOPE")
    b.add(
        "fee_list_d",
        bkkp_sn="F1-R",
        mdtrt_id="V1",
        setl_id="SV1",
        psn_no="P1",
        fixmedins_code="H001",  # batch 1's
        fee_ocur_time="2026-03-02 08:00:00",
        hilist_code=BED,
        list_type="201",
        cnt="-1",
        pric="30",
        det_item_fee_sumamt="-30",
        init_feedetl_sn="F1",
    )
    res = load_batch(b.write(tmp_path / "b2"), con)
    assert [(r[1], r[2], r[4]) for r in rejected(con)] == [
        (2, "fee_ocur_time", 'fee_ocur_time: "2026-03-02 25:00:00" is not a time (YYYY-MM-DD HH:MM:SS)'),
        (
            3,
            "init_feedetl_sn",
            "init_feedetl_sn: G1 not found in fee_list_d (its row 2 in fee_list_d.csv was rejected)",
        ),
        (4, "init_feedetl_sn", "init_feedetl_sn: NOPE not found in fee_list_d"),
    ]
    assert summary(res)["fee_list_d"] == (4, 1, 3)
    prepare_lines(con, "post_hoc")
    assert con.execute("SELECT bkkp_sn FROM lines WHERE mdtrt_id = 'V1' ORDER BY 1").fetchall() == [("F2",)]


def test_a_table_given_twice_stops_the_load(tmp_path):
    folder = small_batch().write(tmp_path / "b")
    header, rows = read_rows(folder / "setl_d.csv")
    _write_xlsx(folder / "SETL_D.xlsx", header, rows)
    (folder / "说明.txt").write_text("not a table", encoding="utf-8")  # other files are ignored
    con = con_at(tmp_path)
    with pytest.raises(LoadError) as e:
        load_batch(folder, con)
    assert str(e.value) == f"{folder / 'setl_d.csv'}: table setl_d is given twice (also SETL_D.xlsx)"
    assert counts(con)["load_log"] == 0


def test_a_child_of_a_ragged_parent_row_is_told_where_its_parent_went(tmp_path):
    """A visit row of the wrong shape is rejected; the lines naming that visit say which row it was."""
    folder = small_batch().write(tmp_path / "b")
    text = (folder / "mdtrt_d.csv").read_text(encoding="utf-8").splitlines()
    text[2] = text[2] + ",extra"  # row 3: V2 with one field too many
    (folder / "mdtrt_d.csv").write_text("\n".join(text) + "\n", encoding="utf-8")
    con = con_at(tmp_path)
    load_batch(folder, con)
    assert [r for r in rejected(con) if r[0] != "mdtrt_d.csv"] == [
        (
            "fee_list_d.csv",
            4,
            "mdtrt_id",
            "V2",
            "mdtrt_id: V2 not found in mdtrt_d (its row 3 in mdtrt_d.csv was rejected)",
        ),
        (
            "setl_d.csv",
            3,
            "mdtrt_id",
            "V2",
            "mdtrt_id: V2 not found in mdtrt_d (its row 3 in mdtrt_d.csv was rejected)",
        ),
    ]


# ---------------------------------------------------------------------------- a stage bigger than memory


def _parquet_batch(tmp_path: Path) -> Path:
    b = small_batch()
    b.rows["fee_list_d"][1]["cnt"] = "two"  # a rejected row, so the checks' paths all run
    src = b.write(tmp_path / "csv")
    folder = tmp_path / "pq"
    folder.mkdir()
    for name, df in _as_frames(src).items():
        df.write_parquet(folder / f"{name}.parquet")
    return folder


def _stored(con) -> dict[str, list[tuple]]:
    out = {}
    for t in ("mdtrt_d", "setl_d", "fee_list_d", "setl_list_diag_d"):
        out[t] = con.execute(f"SELECT * EXCLUDE (batch_id) FROM {t} ORDER BY ALL").fetchall()
    out["rejected"] = rejected(con)
    out["quality"] = con.execute("SELECT * EXCLUDE (batch_id) FROM data_quality ORDER BY ALL").fetchall()
    return out


def _stages_in_file(con) -> list[str]:
    return [
        n
        for (n,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE NOT temporary AND starts_with(table_name, '__s_') ORDER BY 1"
        ).fetchall()
    ]


def test_a_stage_too_big_for_memory_is_written_to_the_database_file_and_loads_the_same(tmp_path, monkeypatch):
    """A Parquet file whose cells as text would not fit in DuckDB's memory limit is staged in a
    table of the database file (compressed, not spilled as it is) and dropped before the commit:
    the same rows load and are rejected, and no stage is left behind."""
    folder = _parquet_batch(tmp_path)
    plain = con_at(tmp_path, "plain.duckdb")
    load_batch(folder, plain)
    assert _stages_in_file(plain) == []

    from medaudit import loader

    seen: list[list[str]] = []
    insert = loader._insert

    def spy(con, c, batch_id):
        seen.append(_stages_in_file(con))
        return insert(con, c, batch_id)

    monkeypatch.setattr(loader, "STAGED_BYTES_PER_CELL", 10**12)  # every file is "too big"
    monkeypatch.setattr(loader, "_insert", spy)
    big = con_at(tmp_path, "big.duckdb")
    load_batch(folder, big)
    assert seen and seen[0] == ["__s_fee_list_d", "__s_mdtrt_d", "__s_setl_d", "__s_setl_list_diag_d"]
    assert _stages_in_file(big) == []
    assert _stored(big) == _stored(plain)
    assert _stored(plain)["rejected"], "the batch must have a rejected row"
    big.close()
    big = con_at(tmp_path, "big.duckdb")
    assert _stages_in_file(big) == []


def test_a_table_of_the_bureau_named_like_a_stage_is_left_alone(tmp_path, monkeypatch):
    from medaudit import loader

    con = con_at(tmp_path)
    con.execute("CREATE TABLE __s_notes AS SELECT 'kept' AS note")
    monkeypatch.setattr(loader, "STAGED_BYTES_PER_CELL", 10**12)
    load_batch(_parquet_batch(tmp_path), con)
    assert _stages_in_file(con) == ["__s_notes"]
    assert con.execute("SELECT note FROM __s_notes").fetchall() == [("kept",)]


def test_a_failed_load_leaves_no_stage_in_the_database_file(tmp_path, monkeypatch):
    from medaudit import loader

    folder = _parquet_batch(tmp_path)
    con = con_at(tmp_path)
    before = counts(con)

    def boom(con, c, batch_id):
        assert _stages_in_file(con)  # staged in the file, then the load fails
        raise RuntimeError("disk full")

    monkeypatch.setattr(loader, "STAGED_BYTES_PER_CELL", 10**12)
    monkeypatch.setattr(loader, "_insert", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        load_batch(folder, con)
    assert _stages_in_file(con) == []
    assert counts(con) == before


def test_only_a_stage_bigger_than_the_memory_limit_goes_to_the_file(tmp_path):
    """10.48M fee lines (25 columns) under DuckDB's 4.7 GiB stay in memory, where they fit and
    load faster; 52.4M under 6.1 GiB do not."""
    from medaudit import loader
    from medaudit.contract import TABLES

    con = con_at(tmp_path)
    names = [c.name for c in TABLES["fee_list_d"].columns][:25]

    def src(rows: int):
        return loader._Source(TABLES["fee_list_d"], tmp_path / "f.parquet", "parquet", names, b"", rows=rows)

    con.execute("SET memory_limit = '4.7GiB'")
    assert not loader._stage_in_file(con, src(10_476_423))
    con.execute("SET memory_limit = '6103MiB'")
    assert loader._stage_in_file(con, src(52_443_796))
    assert not loader._stage_in_file(con, src(3))
