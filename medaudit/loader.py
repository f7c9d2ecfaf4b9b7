"""Load a batch folder (national-format extracts) into the DuckDB store.

A batch is all or nothing: every file is read and checked before the database is touched, and
the rows are written in one transaction. Each input row either loads or lands in
``rejected_rows`` with its file, row number, column and a plain reason; an unreadable file or a
missing required column stops the load with a :class:`LoadError` that names the file and the
column, and nothing is written. Row numbers count the header as row 1, so they match what a
clerk sees when opening the file in Excel or a text editor.

Excel's habit of turning codes into numbers is undone where it is unambiguous: fixed-width
dictionary codes get their leading zero back (``hosp_lv`` 5 -> 05), and a national list code
stored as a number cell is a 15-digit service code (1109000010000 -> 001109000010000).
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import duckdb
import polars as pl

from . import db
from .contract import DATE, DEC, FILE_SUFFIXES, INT, LOAD_ORDER, STR, TABLES, TS, Table

ROW = "__row"
#: National dictionary codes of a fixed width: a value that lost its leading zero in Excel
#: ("5" for hosp_lv 05, "3" for chrgitm_lv 03) is read with it restored, in every format.
DICT_WIDTH = {"hosp_lv": 2, "chrgitm_lv": 2, "med_chrgitm_type": 2}
#: Codes stored as numbers (an Excel number cell, an integer Parquet column) lost their leading
#: zeros; all-digit national list codes are 15-digit service codes, so the zeros are restored.
NUMBER_CODE_WIDTH = {"hilist_code": 15, **DICT_WIDTH}
GEND_VALUES = ("0", "1", "2", "9")


class LoadError(Exception):
    """The batch cannot be loaded at all; nothing was written."""


@dataclass
class TableSummary:
    table: str
    file: str
    read: int
    loaded: int
    rejected: int


@dataclass
class LoadResult:
    batch_id: int | None
    content_hash: str
    already_loaded: bool
    tables: list[TableSummary] = field(default_factory=list)
    rejected: pl.DataFrame | None = None


# ---------------------------------------------------------------------------- reading files


def find_table_files(batch_dir: Path) -> dict[str, Path]:
    """Map table name -> file in the batch folder (names matched case-insensitively)."""
    if not batch_dir.is_dir():
        raise LoadError(f"{batch_dir}: not a folder")
    found: dict[str, Path] = {}
    for p in sorted(batch_dir.iterdir()):
        if not p.is_file() or p.suffix.lower() not in FILE_SUFFIXES:
            continue
        name = p.name[: -len(p.suffix)].lower()
        if name in TABLES:
            if name in found:
                raise LoadError(f"{p}: table {name} is given twice (also {found[name].name})")
            found[name] = p
    for t in TABLES.values():
        if t.required and t.name not in found:
            raise LoadError(f"{batch_dir}: required table {t.name} is missing (looked for {t.name}.csv, .parquet or .xlsx)")
    return found


def _decode_text(path: Path, raw: bytes) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("gb18030")
    except UnicodeDecodeError as e:
        raise LoadError(f"{path}: unreadable: not UTF-8 or GB18030 text (byte {e.start})") from None


def read_file(path: Path) -> pl.DataFrame:
    """Read one table file with every column as text and lower-case column names."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            df = _read_csv(path)
        elif suffix == ".parquet":
            df = pl.read_parquet(path)
            df = df.with_columns(
                [
                    pl.col(c).dt.strftime("%Y-%m-%d %H:%M:%S")
                    if dt == pl.Datetime
                    else pl.col(c).dt.strftime("%Y-%m-%d")
                    if dt == pl.Date
                    else pl.col(c).cast(pl.Utf8).str.zfill(NUMBER_CODE_WIDTH[c.strip().lower()])
                    if dt.is_integer() and c.strip().lower() in NUMBER_CODE_WIDTH
                    else pl.col(c).cast(pl.Utf8)
                    for c, dt in df.schema.items()
                ]
            )
        else:
            df = _read_xlsx(path)
    except LoadError:
        raise
    except Exception as e:  # polars/pyarrow/openpyxl give many exception types for a broken file
        raise LoadError(f"{path}: unreadable: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    lowered = [c.strip().lower().lstrip("\ufeff") for c in df.columns]
    if len(set(lowered)) != len(lowered):
        dup = next(c for c in lowered if lowered.count(c) > 1)
        raise LoadError(f"{path}: column {dup} appears twice")
    return df.rename(dict(zip(df.columns, lowered)))


RAGGED = "__ragged"  # per row: why the row's shape is wrong (CSV only), else null


def _utf8_bytes(path: Path) -> bytes:
    """The file as UTF-8 bytes without BOM and trailing blank lines (GB18030 is converted)."""
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if b"\x00" in raw:
        raise LoadError(f"{path}: unreadable: binary content (NUL bytes), not a CSV text file")
    raw = raw.rstrip(b"\r\n\t ")
    if not raw:
        raise LoadError(f"{path}: unreadable: the file is empty")
    return raw + b"\n"


def _read_csv(path: Path) -> pl.DataFrame:
    """Read a CSV as text columns; rows with the wrong number of fields are marked in RAGGED.

    A short or long row usually means a shifted column (an unquoted comma in a name): its
    values cannot be trusted, so it is rejected, never padded or cut silently. Trailing
    blank lines are ignored; a blank line between rows is rejected as an empty row.
    Text that is not UTF-8 is decoded as GB18030 first.
    """
    data = _utf8_bytes(path)
    try:
        data.decode("utf-8")  # polars does not check every byte (a bad header slips through)
    except UnicodeDecodeError:
        data = _decode_text(path, data).encode("utf-8")
    df = pl.read_csv(data, infer_schema=False, truncate_ragged_lines=True)
    n_cols = len(df.columns)
    counts = _field_counts(data)
    if counts.len() - 1 != df.height:  # header + one count per record, else the shapes disagree
        raise LoadError(f"{path}: unreadable: found {counts.len() - 1} rows but parsed {df.height}")
    n = pl.col("__n")
    reason = (
        counts.slice(1).alias("__n").to_frame()
        .select(
            pl.when(n == 0)
            .then(pl.lit("the row is empty"))
            .when(n == 1)
            .then(pl.lit(f"the row has 1 field, the header has {n_cols}"))
            .when(n != n_cols)
            .then(pl.format("the row has {} fields, the header has " + str(n_cols), n))
            .alias(RAGGED)
        )
        .to_series()
    )
    return df.with_columns(reason)


def _field_counts(data: bytes) -> pl.Series:
    """Number of fields of each record (0 for a blank line), header included."""
    if b'"' not in data and b"\x1f" not in data:
        # no quoting: records are lines and fields are commas + 1; read each line whole
        lines = pl.read_csv(
            data, has_header=False, separator="\x1f", quote_char=None, infer_schema=False, new_columns=["l"]
        ).get_column("l")
        return pl.select(
            pl.when(lines.is_null() | (lines == "")).then(0)
            .otherwise(lines.str.count_matches(",", literal=True) + 1).cast(pl.Int64)
        ).to_series()
    import csv

    text = data.decode("utf-8")
    return pl.Series([len(r) for r in csv.reader(io.StringIO(text))], dtype=pl.Int64)


def _excel_number(v: float) -> str:
    """A number cell as Excel shows it: 15 significant digits, no float noise (0.1+0.2 -> 0.3)."""
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    out = format(v, ".15g")
    if "e" in out:  # very small or large: write it out plainly
        out = format(v, ".15f").rstrip("0").rstrip(".")
    return out


def _read_xlsx(path: Path) -> pl.DataFrame:
    import openpyxl

    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    ws = wb.worksheets[0]
    rows = ws.iter_rows(values_only=True)
    header = next(rows, None)
    if not header:
        raise LoadError(f"{path}: unreadable: the first sheet is empty")
    names = [str(h).strip() if h is not None else f"column_{i + 1}" for i, h in enumerate(header)]

    widths = [NUMBER_CODE_WIDTH.get(n.lower()) for n in names]

    def cell(v, width):
        if v is None:
            return None
        if isinstance(v, datetime):
            return v.strftime("%Y-%m-%d %H:%M:%S") if (v.hour or v.minute or v.second) else v.strftime("%Y-%m-%d")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out = _excel_number(float(v)) if isinstance(v, float) else str(v)
            return out.zfill(width) if width and out.isdigit() else out
        return str(v)

    data = [[cell(v, w) for v, w in zip(r, widths)] for r in rows]
    while data and all(v is None for v in data[-1]):  # formatted but empty rows at the end
        data.pop()
    wb.close()
    lowered = [n.lower() for n in names]
    for n in lowered:
        if lowered.count(n) > 1:
            raise LoadError(f"{path}: column {n} appears twice")
    # every column as text, also one whose cells are all empty (it would be typed Null)
    return pl.DataFrame(data, schema={n: pl.Utf8 for n in names}, orient="row")


# ---------------------------------------------------------------------------- checking rows

_DEC_RE = r"^[+-]?\d{1,14}(\.\d{1,4})?$"
_DEC_ANY_RE = r"^[+-]?\d+(\.\d+)?$"
_INT_RE = r"^[+-]?\d{1,9}$"


def _parse_exprs(table: Table, present: set[str]) -> tuple[list[pl.Expr], list[pl.Expr]]:
    """Return (typed column expressions, problem expressions) for one table.

    Each problem expression yields, per row, a reason string or null.
    """
    typed, problems = [], []
    for col in table.columns:
        if col.name not in present:
            typed.append(pl.lit(None, dtype=_pl_type(col.type)).alias(col.name))
            continue
        raw = pl.col(col.name)
        if col.type == STR:
            value = raw
            bad = pl.lit(None, dtype=pl.Utf8)
        elif col.type == DATE:
            value = raw.str.to_date("%Y-%m-%d", strict=False)
            bad = pl.when(raw.is_not_null() & value.is_null()).then(
                pl.format('{}: "{}" is not a date (YYYY-MM-DD)', pl.lit(col.name), raw)
            )
        elif col.type == TS:
            value = pl.coalesce(
                raw.str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False, time_unit="us"),
                raw.str.to_datetime("%Y-%m-%dT%H:%M:%S", strict=False, time_unit="us"),
                raw.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")),
            )
            bad = pl.when(raw.is_not_null() & value.is_null()).then(
                pl.format('{}: "{}" is not a time (YYYY-MM-DD HH:MM:SS)', pl.lit(col.name), raw)
            )
        elif col.type == DEC:
            ok = raw.str.contains(_DEC_RE)
            value = pl.when(ok).then(raw).cast(pl.Decimal(18, 4), strict=False)
            bad = (
                pl.when(raw.is_not_null() & raw.str.contains(_DEC_ANY_RE) & ~ok)
                .then(pl.format('{}: "{}" has more than 4 decimals or is too large', pl.lit(col.name), raw))
                .when(raw.is_not_null() & ~ok)
                .then(pl.format('{}: "{}" is not a number', pl.lit(col.name), raw))
            )
        else:  # INT
            ok = raw.str.contains(_INT_RE)
            value = pl.when(ok).then(raw).cast(pl.Int32, strict=False)
            bad = pl.when(raw.is_not_null() & ~ok).then(
                pl.format('{}: "{}" is not a whole number', pl.lit(col.name), raw)
            )
        if col.required:
            bad = pl.when(raw.is_null()).then(pl.lit(f"{col.name}: required value is missing")).otherwise(bad)
        if col.name == "gend":
            bad = pl.when(raw.is_not_null() & ~raw.is_in(GEND_VALUES)).then(
                pl.format('gend: "{}" is not one of 0, 1, 2, 9', raw)
            ).otherwise(bad)
        typed.append(value.alias(col.name))
        problems.append(bad.alias(col.name))
    return typed, problems


def _pl_type(t: str):
    return {STR: pl.Utf8, DATE: pl.Date, TS: pl.Datetime("us"), DEC: pl.Decimal(18, 4), INT: pl.Int32}[t]


@dataclass
class _Checked:
    table: Table
    path: Path
    good: pl.DataFrame  # typed rows that load (with ROW)
    problems: pl.DataFrame  # row, column, value, reason
    read: int
    extra: list[str]
    rejected_keys: pl.DataFrame | None = None  # key value -> its row, for rows that did not load


def _problem_frame(rows: pl.DataFrame, column: str, reason: pl.Expr, value: pl.Expr) -> pl.DataFrame:
    return rows.select(
        pl.col(ROW).alias("row_no"),
        pl.lit(column).alias("column_name"),
        value.cast(pl.Utf8).alias("value"),
        reason.alias("reason"),
    )


def check_table(
    table: Table,
    path: Path,
    df: pl.DataFrame,
    existing_keys: pl.DataFrame | None,
    parent_keys: dict[str, pl.Series],
    parent_rejected: dict[str, tuple[str, pl.DataFrame]] | None = None,
) -> _Checked:
    present = set(df.columns)
    for col in table.columns:
        if col.required and col.name not in present:
            raise LoadError(f"{path}: required column {col.name} is missing")
    extra = [c for c in df.columns if c not in {x.name for x in table.columns} and c != RAGGED]
    # Trim cells; an empty cell is a missing value.
    df = df.with_columns(
        [pl.col(c).str.strip_chars().replace("", None) for c in df.columns]
    ).with_row_index(ROW, offset=2)
    df = df.with_columns(
        pl.when(pl.col(c).str.contains(r"^\d+$") & (pl.col(c).str.len_chars() < w))
        .then(pl.col(c).str.zfill(w)).otherwise(pl.col(c)).alias(c)
        for c, w in DICT_WIDTH.items() if c in df.columns
    )
    typed, problem_exprs = _parse_exprs(table, present)
    parsed = df.select([pl.col(ROW), *typed, *[pl.col(c) for c in extra]])
    raw_problems = df.select([pl.col(ROW), *problem_exprs])
    frames = []
    for col in [c.name for c in table.columns if c.name in present]:
        frames.append(
            raw_problems.join(df.select(ROW, pl.col(col).alias("__v")), on=ROW)
            .filter(pl.col(col).is_not_null())
            .select(pl.col(ROW).alias("row_no"), pl.lit(col).alias("column_name"), pl.col("__v").alias("value"), pl.col(col).alias("reason"))
        )
    if RAGGED in df.columns:  # a row of the wrong shape: its values are not trusted, one reason only
        shaped = df.filter(pl.col(RAGGED).is_not_null())
        frames = [f.filter(~pl.col("row_no").is_in(shaped.get_column(ROW).implode())) for f in frames]
        frames.append(_problem_frame(shaped, "", pl.col(RAGGED), pl.lit(None, dtype=pl.Utf8)))
    problems = pl.concat(frames) if frames else pl.DataFrame(schema={"row_no": pl.UInt32, "column_name": pl.Utf8, "value": pl.Utf8, "reason": pl.Utf8})
    bad_rows = problems.get_column("row_no").unique()

    # Keys: duplicates within the file (the first clean occurrence loads), and keys loaded before.
    if table.key:
        k = table.key[0]
        clean = parsed.filter(~pl.col(ROW).is_in(bad_rows.implode()))
        first = clean.group_by(k).agg(pl.col(ROW).min().alias("__first"))
        dups = clean.join(first, on=k).filter(pl.col(ROW) != pl.col("__first"))
        problems = pl.concat(
            [problems, _problem_frame(dups, k, pl.format("{}: duplicate of row {}", pl.lit(k), pl.col("__first")), pl.col(k))]
        )
        if existing_keys is not None and existing_keys.height:
            again = clean.join(existing_keys, on=k, how="inner")
            problems = pl.concat(
                [
                    problems,
                    _problem_frame(
                        again,
                        k,
                        pl.format("{}: {} was already loaded in batch {}", pl.lit(k), pl.col(k), pl.col("batch_id")),
                        pl.col(k),
                    ),
                ]
            )
    # Orphans: the parent key must be loaded (in this batch or an earlier one).
    for col, parent, _pcol in table.parents:
        keys = parent_keys.get(parent)
        if keys is None:
            continue
        clean = parsed.filter(~pl.col(ROW).is_in(problems.get_column("row_no").unique().implode()))
        orphans = clean.filter(pl.col(col).is_not_null() & ~pl.col(col).is_in(keys.implode()))
        reason = pl.format("{}: {} not found in {}", pl.lit(col), pl.col(col), pl.lit(parent))
        if parent_rejected and parent in parent_rejected:  # the parent row is there but was rejected
            pfile, prej = parent_rejected[parent]
            orphans = orphans.join(prej.rename({prej.columns[0]: col}), on=col, how="left")
            reason = pl.when(pl.col("__prow").is_not_null()).then(
                pl.format("{} (its row {} in {} was rejected)", reason, pl.col("__prow"), pl.lit(pfile))
            ).otherwise(reason)
        problems = pl.concat([problems, _problem_frame(orphans, col, reason, pl.col(col))])
    bad = problems.get_column("row_no").unique()
    good = parsed.filter(~pl.col(ROW).is_in(bad.implode()))
    rejected_keys = None
    if table.key:
        k = table.key[0]
        rejected_keys = (
            df.filter(pl.col(ROW).is_in(bad.implode()) & pl.col(k).is_not_null())
            .group_by(k).agg(pl.col(ROW).min().alias("__prow"))
            .filter(~pl.col(k).is_in(good.get_column(k).implode()))
        )
    return _Checked(table, path, good, problems.sort("row_no", "column_name"), df.height, extra, rejected_keys)


def _check_refund_links(c: _Checked, existing: pl.DataFrame) -> None:
    """A refund line must name a line that exists (this batch or an earlier one): a refund of
    nothing would otherwise be dropped silently by the netting."""
    col = "init_feedetl_sn"
    known = pl.concat([existing.get_column("bkkp_sn"), c.good.get_column("bkkp_sn")])
    orphans = c.good.filter(pl.col(col).is_not_null() & ~pl.col(col).is_in(known.implode()))
    if not orphans.height:
        return
    reason = pl.format("{}: {} not found in fee_list_d", pl.lit(col), pl.col(col))
    if c.rejected_keys is not None and c.rejected_keys.height:
        orphans = orphans.join(c.rejected_keys.rename({"bkkp_sn": col}), on=col, how="left")
        reason = pl.when(pl.col("__prow").is_not_null()).then(
            pl.format("{} (its row {} in {} was rejected)", reason, pl.col("__prow"), pl.lit(c.path.name))
        ).otherwise(reason)
    c.problems = pl.concat([c.problems, _problem_frame(orphans, col, reason, pl.col(col))]).sort("row_no", "column_name")
    c.good = c.good.filter(~pl.col(ROW).is_in(orphans.get_column(ROW).implode()))


# ---------------------------------------------------------------------------- loading


def content_hash(files: dict[str, Path]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode())
        h.update(b"\0")
        h.update(files[name].read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def load_batch(batch_dir: str | Path, con: duckdb.DuckDBPyConnection) -> LoadResult:
    """Load one batch folder into an open database. See the module doc for the guarantees."""
    batch_dir = Path(batch_dir)
    files = find_table_files(batch_dir)
    digest = content_hash(files)
    db.ensure_schema(con)
    prior = con.execute("SELECT batch_id FROM load_log WHERE content_hash = ?", [digest]).fetchall()
    if prior:
        prior = prior[0]
        return LoadResult(prior[0], digest, True)

    frames = {name: read_file(path) for name, path in files.items()}  # may raise LoadError
    batch_id = con.execute("SELECT coalesce(max(batch_id), 0) + 1 FROM load_log").fetchall()[0][0]

    checked: list[_Checked] = []
    parent_keys: dict[str, pl.Series] = {}
    parent_rejected: dict[str, tuple[str, pl.DataFrame]] = {}
    for name in LOAD_ORDER:
        if name not in frames:
            continue
        table = TABLES[name]
        existing = None
        if table.key:
            existing = con.sql(f"SELECT {table.key[0]}, batch_id FROM {name}").pl()
        for _c, parent, pcol in table.parents:
            if parent not in parent_keys:  # parent table not in this batch: earlier batches only
                parent_keys[parent] = con.sql(f"SELECT {pcol} FROM {parent}").pl().get_column(pcol)
        c = check_table(table, files[name], frames[name], existing, parent_keys, parent_rejected)
        if name == "mdtrt_d":  # the parent of every claim table: earlier batches plus this one
            k = table.key[0]
            parent_keys[name] = pl.concat([existing.get_column(k), c.good.get_column(k)])
            parent_rejected[name] = (c.path.name, c.rejected_keys)
        if name == "fee_list_d":
            _check_refund_links(c, existing)
        checked.append(c)

    summaries = [
        TableSummary(c.table.name, c.path.name, c.read, c.good.height, c.read - c.good.height) for c in checked
    ]
    rejected = pl.concat(
        [
            c.problems.with_columns(pl.lit(c.path.name).alias("file"), pl.lit(c.table.name).alias("table_name"))
            for c in checked
        ]
    ).select("file", "table_name", "row_no", "column_name", "value", "reason")

    con.execute("BEGIN TRANSACTION")
    try:
        for c in checked:
            for col in c.extra:
                con.execute(f'ALTER TABLE {c.table.name} ADD COLUMN IF NOT EXISTS "{col}" VARCHAR')
            cols = [ROW, *c.table.column_names, *c.extra]
            data = c.good.select(cols).rename({ROW: "source_row"}).to_arrow()
            con.register("__incoming", data)
            names = ", ".join(f'"{x}"' for x in ["source_row", *c.table.column_names, *c.extra])
            con.execute(f"INSERT INTO {c.table.name} (batch_id, {names}) SELECT {batch_id}, {names} FROM __incoming")
            con.unregister("__incoming")
        con.register("__rejected", rejected.to_arrow())
        con.execute(
            f"INSERT INTO rejected_rows SELECT {batch_id}, file, table_name, row_no, column_name, value, reason FROM __rejected"
        )
        con.unregister("__rejected")
        con.execute(
            "INSERT INTO load_log VALUES (?, ?, ?, now()::TIMESTAMP, ?)",
            [batch_id, digest, str(batch_dir.resolve()), json.dumps([s.__dict__ for s in summaries], ensure_ascii=False)],
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return LoadResult(batch_id, digest, False, summaries, rejected)
