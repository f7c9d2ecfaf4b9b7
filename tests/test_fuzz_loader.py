"""Property-based fuzz of the loader (hypothesis) over hostile files.

Each example takes a small valid batch, then spoils one table file: cells replaced with nasty
values (SQL, formulas, quotes, NUL, full-width and Arabic-Indic digits, huge numbers, BOMs,
line breaks), extra columns with hostile names, CRLF line endings, a BOM or GB18030, an empty
or header-only file; CSV, Parquet or XLSX. Whatever happens, the invariants hold:

- the load either fails with a LoadError and the database is exactly as it was, or
- per table read = loaded + rejected, the rows in the database are the loaded ones, every
  rejected row has a reason in rejected_rows, and no required column of any row is NULL;
- no SQL of the file ran (the findings table is there, no file was written).

The CI budget is small and seeded (derandomised); a larger run:
``MEDAUDIT_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz_loader.py``.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kit import Batch
from medaudit import db
from medaudit.contract import TABLES
from medaudit.loader import LoadError, load_batch

pytestmark = pytest.mark.slow  # hypothesis examples over real loads; CI runs the seeded budget

BUDGET = int(os.environ.get("MEDAUDIT_FUZZ_EXAMPLES", "0"))
FUZZ = settings(
    max_examples=BUDGET or 30,
    derandomize=not BUDGET,  # CI: the same examples every run
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)

BED = "001109000010000"
HOSTILE_NAMES = [
    "y\" varchar; commit; drop table findings; copy (select 42) to 'x.csv'; begin transaction; --",
    "a'); drop table findings; --",
    "[red]x[/]",
    "__row",
    "batch_id",
    "source_row",
    "Ｃｎｔ",  # a contract name in full width: NFKC makes it cnt (then it appears twice)
    "BKKP_SN ",
    "\ufeffnote",
    "列名",
]
NASTY = [
    "",
    " ",
    "\u3000",
    "２",
    "１２３.００",
    "٣",
    "١٢٣",
    "０.５",
    "-２",
    "=cmd|' /C calc'!A0",
    "=1+1",
    "@SUM(A1)",
    "+1",
    "-0",
    "1e5",
    "99999999999999999999",
    "0.00001",
    "1.23456",
    "NaN",
    "inf",
    '"',
    '""',
    "'",
    "\\N",
    "NULL",
    "null",
    "None",
    "a\nb",
    "a\r\nb",
    'a"b,c',
    "'; drop table findings; --",
    "x'); copy (select 1) to 'x.csv'; --",
    "2026-02-30",
    "2026-03-02 25:00:00",
    "２０２６-０３-０２",
    "٢٠٢٦-03-02",
    "2026-03-02T08:00:00",
    "9999-12-31",
    "0001-01-01",
    "\ufeff1",
    "1\u200b",
    "𠀀",
    "🙂",
    "V1",
    "F1",
    "SV2",
    BED,
    "-1",
    "-50",
    "0",
    "1",
    "10.5",
]
# ASCII control characters are kept out of XLSX (Excel cannot store them) but go into CSV/Parquet
NUL_ETC = ["\x00", "a\x00b", "\x1f", "\x0b"]


def base_batch() -> Batch:
    b = Batch()
    v1 = b.visit(mdtrt_id="V1", psn_no="P1")
    v2 = b.visit(mdtrt_id="V2", psn_no="P2")
    b.line(v1, BED, bkkp_sn="F1", pric="30")
    b.line(v1, "XA01ABD075A002010100483", bkkp_sn="F2", cnt="2", pric="1.25")
    b.refund("F2", bkkp_sn="F2-R", det_item_fee_sumamt="-1.25")
    b.line(v2, BED, bkkp_sn="F3", pric="30")
    b.diag(v1, "J18.900")
    b.add("purchases", fixmedins_code="H001", hilist_code=BED, period="2026-03", purchase_cnt="10")
    b.add("psn_death", psn_no="P2", die_date="2026-04-01")
    b.add("hilist", hilist_code=BED, hilist_name="床位费", begndate="2026-01-01", lv1_pric="30")
    b.add("setl_list_oprn_d", mdtrt_id="V1", oprn_oprt_code="13.4100x001")
    b.add("code_names", kind="dept", code="D01", code_name="心内科", fixmedins_code="H001")
    return b


TABLE_NAMES = sorted(t for t in TABLES)


@st.composite
def spoilt(draw, formats):
    table = draw(st.sampled_from(TABLE_NAMES))
    fmt = draw(st.sampled_from(formats))
    cols = TABLES[table].column_names
    value = st.one_of(
        st.sampled_from(NASTY + (NUL_ETC if fmt != "xlsx" else [])),
        st.text(alphabet="0123456789０１２٣.-+e :T,\"'\n", max_size=10),
    )
    edits = draw(st.lists(st.tuples(st.integers(0, 5), st.sampled_from(cols), value), max_size=6))
    extra = draw(st.lists(st.sampled_from(HOSTILE_NAMES), max_size=2, unique=True))
    shape = draw(st.sampled_from(["rows", "rows", "rows", "header_only", "empty"]))
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "gb18030"]))
    return table, fmt, edits, extra, shape, ending, encoding


def write_spoilt(folder: Path, table: str, fmt: str, edits, extra, shape, ending, encoding) -> None:
    src = folder / f"{table}.csv"
    with open(src, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    for i, col, v in edits:
        if body:
            body[i % len(body)][header.index(col)] = v
    header = header + extra
    body = [r + ["1"] * len(extra) for r in body]
    if shape == "header_only":
        body = []
    src.unlink()
    if fmt == "csv":
        if shape == "empty":
            (folder / f"{table}.csv").write_bytes(b"")
            return
        buf = io.StringIO()
        csv.writer(buf, lineterminator=ending).writerows([header, *body])
        (folder / f"{table}.csv").write_bytes(buf.getvalue().encode(encoding))
    elif fmt == "parquet":
        names = [f"{h}#{i}" if header.index(h) != i else h for i, h in enumerate(header)]  # parquet needs unique names
        df = pl.DataFrame(
            [list(c) for c in zip(*body)] if body else [[] for _ in names],
            schema={n: pl.Utf8 for n in names},
            orient="col",
        )
        df.write_parquet(folder / f"{table}.parquet")
    else:
        import openpyxl

        wb = openpyxl.Workbook()
        ws = wb.active
        ws.append(header)
        for r in body:
            ws.append(r)
        wb.save(folder / f"{table}.xlsx")


def dump(con) -> dict:
    out = {}
    for (t,) in con.execute("SELECT table_name FROM information_schema.tables ORDER BY 1").fetchall():
        out[t] = sorted(map(repr, con.execute(f'SELECT * FROM "{t}"').fetchall()))
    return out


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """One database holding batch 1 (so that 'unchanged' means something), its dump, and the
    source of batch 2. Each example's batch is deleted again after its checks."""
    root = tmp_path_factory.mktemp("fuzz")
    con = db.connect(root / "t.duckdb")
    b1 = Batch()
    b1.line(b1.visit(mdtrt_id="V0", psn_no="P0"), BED, bkkp_sn="F0")
    load_batch(b1.write(root / "b1"), con)
    yield root, con, dump(con), base_batch().write(root / "b2")
    con.close()


_runs = iter(range(10**9))


def check_invariants(template, case) -> None:
    root, con, before, src = template
    work = root / f"w{next(_runs)}"
    work.mkdir()
    folder = work / "batch"
    shutil.copytree(src, folder)
    write_spoilt(folder, *case)
    cwd = os.getcwd()
    os.chdir(work)  # where a `copy ... to 'x.csv'` from a file would write
    try:
        try:
            res = load_batch(folder, con)
        except LoadError as e:
            event(f"load refused: {str(e).split(': ', 1)[1][:40]}")
            assert dump(con) == before
            return
    finally:
        os.chdir(cwd)
    try:
        assert not (work / "x.csv").exists()
        assert con.execute("SELECT count(*) FROM findings").fetchall() == [(0,)]
        assert not res.already_loaded
        n_rej = sum(s.rejected for s in res.tables)
        event(f"loaded, {n_rej} rows rejected" if n_rej < 3 else "loaded, 3+ rows rejected")
        for s in res.tables:
            assert s.read == s.loaded + s.rejected, s
            t = TABLES[s.table]
            assert con.execute(f"SELECT count(*) FROM {t.name} WHERE batch_id = ?", [res.batch_id]).fetchall() == [
                (s.loaded,)
            ]
            assert con.execute(
                "SELECT count(DISTINCT row_no) FROM rejected_rows WHERE batch_id = ? AND table_name = ?",
                [res.batch_id, t.name],
            ).fetchall() == [(s.rejected,)]
            req = " OR ".join(f"{c.name} IS NULL" for c in t.columns if c.required)
            assert con.execute(f"SELECT count(*) FROM {t.name} WHERE {req}").fetchall() == [(0,)]
        assert con.execute("SELECT count(*) FROM rejected_rows WHERE reason IS NULL OR reason = ''").fetchall() == [
            (0,)
        ]
    finally:  # back to batch 1 only, for the next example
        for t in [*TABLES, "rejected_rows", "data_quality", "load_log"]:
            con.execute(f"DELETE FROM {t} WHERE batch_id = ?", [res.batch_id])


@FUZZ
@given(case=spoilt(["csv"]))
def test_fuzz_csv(template, case):
    check_invariants(template, case)


@settings(FUZZ, max_examples=max(BUDGET // 4, 10) if BUDGET else 10)
@given(case=spoilt(["parquet", "xlsx"]))
def test_fuzz_parquet_and_xlsx(template, case):
    check_invariants(template, case)
