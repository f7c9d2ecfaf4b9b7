"""Load a batch folder (national-format extracts) into the DuckDB store.

A batch is all or nothing: every file is read and checked, and the whole load (schema
creation included) is one transaction; any error rolls it back and leaves the database
exactly as it was. Each input row either loads or lands in ``rejected_rows`` with its file,
row number, column and a plain reason, so per table read = loaded + rejected; an unreadable
file or a missing required column stops the load with a :class:`LoadError` that names the
file and the column. Row numbers count the header as row 1, so they match what a clerk sees
when opening the file in Excel or a text editor. After the inserts a check query proves that
no required column of a loaded row is NULL (a failure there is a bug: the load is undone).

No input reaches SQL text: tables and columns are the data contract's names (quoted by
:func:`medaudit.db.ident`), values are bound. A file column that is not in the contract is
dropped and listed in the load summary (``ignored columns``).

Cells are trimmed and NFKC-normalised (all columns but free-text names), so full-width
``１２３.００`` reads as ``123.00``; the summary counts the cells changed. Numbers and dates
accept ASCII digits only: another script's digits left after NFKC (Arabic-Indic ``٣``) are
rejected with the reason.

Reload policy, one rule for every table: each table has a natural key (``contract.Table.key``:
mdtrt_d visit, setl_d settlement, fee_list_d line, diagnoses visit + code + type, procedures
visit + code + date, psn_death person, purchases institution + code + period, hilist code +
begin date). A row whose key was loaded by an earlier batch is rejected (``... was already
loaded in batch N``); within a file the first clean row of a key loads and the others are
rejected (``duplicate of row R``). A corrected re-submission of a whole batch therefore loads
only the rows that were rejected before. The content hash is taken over the parsed rows, so
the same batch re-exported (CRLF, GB18030, BOM, Parquet) is recognised as already loaded.

Consistency with reasons: a settlement or fee line must carry its visit's person and
institution; a fee line's ``setl_id`` naming a known settlement (this batch or earlier) must
be a settlement of the same visit. An unknown ``setl_id`` loads (in day-by-day extracts the
settlement may come in a later batch) and is listed in ``data_quality``. A refund naming a
line (``init_feedetl_sn``) must name a line of the same visit and code and never refund more
than is left of it; an unlinked refund (negative ``cnt``, no ``init_feedetl_sn``) must match
a line of the same visit, code and day, else it is rejected as a refund of nothing (the
netting would otherwise drop it silently, the same reason a refund of an unknown line is
rejected). A line whose amount differs from cnt x pric by more than 0.01 loads and is listed
in ``data_quality``.

Excel's habit of turning codes into numbers is undone where it is unambiguous: fixed-width
dictionary codes get their leading zero back (``hosp_lv`` 5 -> 05), and a national list code
stored as a number cell is a 15-digit service code (1109000010000 -> 001109000010000).
"""
from __future__ import annotations

import hashlib
import io
import json
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import polars as pl

from . import db
from .contract import DATE, DEC, FILE_SUFFIXES, FREE_TEXT, INT, LOAD_ORDER, STR, TABLES, TS, Table

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
    normalised: int = 0  # cells that NFKC normalisation changed (full-width digits, ...)
    ignored_columns: list[str] = field(default_factory=list)  # not in the contract: dropped
    data_quality: int = 0  # loaded rows listed in data_quality


@dataclass
class LoadResult:
    batch_id: int | None
    content_hash: str
    already_loaded: bool
    tables: list[TableSummary] = field(default_factory=list)
    rejected: pl.DataFrame | None = None
    quality: pl.DataFrame | None = None


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


def read_file(path: Path, digests: dict[Path, bytes] | None = None) -> pl.DataFrame:
    """Read one table file with every column as text and lower-case column names.

    ``digests`` (when given) receives the file's digest for :func:`content_hash`."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            df = _read_csv(path, digests)
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
    lowered = [unicodedata.normalize("NFKC", c).lstrip("\ufeff").strip().lower() for c in df.columns]
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


def _read_csv(path: Path, digests: dict[Path, bytes] | None = None) -> pl.DataFrame:
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
    if digests is not None:  # the text as UTF-8 with LF line endings: see content_hash
        digests[path] = hashlib.sha256(data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")).digest()
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


# ---------------------------------------------------------------------------- preparing cells

_DEC_RE = r"^[+-]?[0-9]{1,14}(\.[0-9]{1,4})?$"
_DEC_ANY_RE = r"^[+-]?[0-9]+(\.[0-9]+)?$"
_INT_RE = r"^[+-]?[0-9]{1,9}$"
_NON_ASCII = r"[^\x00-\x7F]"


@dataclass
class _Prepared:
    table: Table
    path: Path
    df: pl.DataFrame  # contract columns present (+ RAGGED), trimmed, normalised, "" -> null
    ignored: list[str]  # columns of the file that are not in the contract: dropped
    normalised: int  # cells that NFKC changed


def prepare_table(table: Table, path: Path, df: pl.DataFrame) -> _Prepared:
    """Keep the contract's columns, trim every cell, NFKC-normalise all but free text.

    A column that is not in the contract is dropped here (and listed in the load summary):
    nothing of it is stored, so its name never reaches the database.
    """
    present = set(df.columns)
    for col in table.columns:
        if col.required and col.name not in present:
            raise LoadError(f"{path}: required column {col.name} is missing")
    known = set(table.column_names)
    ignored = [c for c in df.columns if c not in known and c != RAGGED]
    cols = [c for c in table.column_names if c in present]
    df = df.select([pl.col(c).str.strip_chars() for c in cols] + ([pl.col(RAGGED)] if RAGGED in present else []))
    # NFKC only where a column holds a non-ASCII character at all (most never do: fast path)
    norm = [c for c in cols if c not in FREE_TEXT]
    wide = df.select((pl.col(c).str.len_bytes() != pl.col(c).str.len_chars()).any() for c in norm).row(0) if norm and df.height else ()
    to_norm = [c for c, w in zip(norm, wide) if w]
    normalised = 0
    if to_norm:
        new = df.select(pl.col(c).str.normalize("NFKC").str.strip_chars() for c in to_norm)
        normalised = sum(new.select((pl.col(c) != df.get_column(c)).fill_null(False).sum() for c in to_norm).row(0))
        df = df.with_columns(new)
    df = df.with_columns([pl.when(pl.col(c).str.len_bytes() > 0).then(pl.col(c)).alias(c) for c in cols])
    df = df.with_columns(
        pl.when(pl.col(c).str.contains(r"^[0-9]+$") & (pl.col(c).str.len_chars() < w))
        .then(pl.col(c).str.zfill(w)).otherwise(pl.col(c)).alias(c)
        for c, w in DICT_WIDTH.items() if c in cols
    )
    return _Prepared(table, path, df, ignored, normalised)


# ---------------------------------------------------------------------------- checking rows


def _parse_exprs(table: Table, present: set[str]) -> tuple[list[pl.Expr], list[pl.Expr]]:
    """Return (typed column expressions, problem expressions) for one table.

    Each problem expression yields, per row, a reason string or null. Digits are ASCII only
    ([0-9]): a number or date still holding another script's digits after NFKC is rejected.
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
            value = raw.str.to_date("%Y-%m-%d", strict=False)  # chrono reads ASCII digits only
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
        problems.append(bad.alias(_P + col.name))
    return typed, problems


_P = "__p_"  # prefix of the per-column problem expressions


def _pl_type(t: str):
    return {STR: pl.Utf8, DATE: pl.Date, TS: pl.Datetime("us"), DEC: pl.Decimal(18, 4), INT: pl.Int32}[t]


def _text(table: Table, name: str) -> pl.Expr:
    """A typed column as the contract writes it (for messages)."""
    t = table.column(name).type
    c = pl.col(name)
    if t == TS:
        return c.dt.strftime("%Y-%m-%d %H:%M:%S")
    if t == DATE:
        return c.dt.strftime("%Y-%m-%d")
    if t == DEC:
        return _num(c)
    return c.cast(pl.Utf8)


def _num(e: pl.Expr) -> pl.Expr:
    """A decimal without trailing zeros: 50.0000 -> 50, 2.5000 -> 2.5."""
    return e.cast(pl.Utf8).str.replace(r"(\.[0-9]*?)0+$", "${1}").str.replace(r"\.$", "")


_PROBLEM_SCHEMA = {"row_no": pl.UInt32, "column_name": pl.Utf8, "value": pl.Utf8, "reason": pl.Utf8}
_QUALITY_SCHEMA = {"row_no": pl.UInt32, "row_key": pl.Utf8, "column_name": pl.Utf8, "value": pl.Utf8, "reason": pl.Utf8}


def _problem_frame(rows: pl.DataFrame, column: str, reason: pl.Expr, value: pl.Expr) -> pl.DataFrame:
    return rows.select(
        pl.col(ROW).cast(pl.UInt32).alias("row_no"),
        pl.lit(column, dtype=pl.Utf8).alias("column_name"),
        value.cast(pl.Utf8).alias("value"),
        reason.cast(pl.Utf8).alias("reason"),
    )


@dataclass
class _Checked:
    table: Table
    path: Path
    raw: pl.DataFrame  # the prepared text rows (with ROW)
    good: pl.DataFrame  # typed rows that load (with ROW)
    problems: pl.DataFrame  # row, column, value, reason
    read: int
    ignored: list[str]
    normalised: int
    quality: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=_QUALITY_SCHEMA))

    def reject(self, rows: pl.DataFrame, column: str, reason: pl.Expr, value: pl.Expr) -> None:
        """Set ``rows`` (a subset of ``good``) aside with a reason; they do not load."""
        if not rows.height:
            return
        self.problems = pl.concat([self.problems, _problem_frame(rows, column, reason, value)])
        self.good = self.good.filter(~pl.col(ROW).is_in(rows.get_column(ROW).implode()))

    def note(self, rows: pl.DataFrame, column: str, reason: pl.Expr, value: pl.Expr) -> None:
        """List loaded ``rows`` in the data-quality table (they still load)."""
        if not rows.height:
            return
        key = self.table.key[0] if self.table.key else None
        self.quality = pl.concat([
            self.quality,
            rows.select(
                pl.col(ROW).cast(pl.UInt32).alias("row_no"),
                (pl.col(key).cast(pl.Utf8) if key else pl.lit(None, dtype=pl.Utf8)).alias("row_key"),
                pl.lit(column, dtype=pl.Utf8).alias("column_name"),
                value.cast(pl.Utf8).alias("value"),
                reason.cast(pl.Utf8).alias("reason"),
            ),
        ])

    def rejected_keys(self) -> pl.DataFrame:
        """For a one-column key: key value -> its first row, for keys of rows that did not load."""
        k = self.table.key[0]
        bad = self.problems.get_column("row_no").unique()
        return (
            self.raw.filter(pl.col(ROW).is_in(bad.implode()) & pl.col(k).is_not_null())
            .group_by(k).agg(pl.col(ROW).min().alias("__prow"))
            .filter(~pl.col(k).is_in(self.good.get_column(k).implode()))
        )


def check_table(
    prep: _Prepared,
    existing_keys: pl.DataFrame | None,
    parent_keys: dict[str, pl.Series],
    parent_rejected: dict[str, tuple[str, pl.DataFrame]] | None = None,
) -> _Checked:
    """Types, required values, natural key (in the file and against earlier batches), parents."""
    table, path = prep.table, prep.path
    df = prep.df.with_row_index(ROW, offset=2)
    present = set(prep.df.columns)
    typed, problem_exprs = _parse_exprs(table, present)
    # one lazy pass: each column is parsed once for its value and its problem (shared subexpressions)
    both = df.lazy().select([pl.col(ROW), *typed, *problem_exprs]).collect()
    pcols = [e for e in both.columns if e.startswith(_P)]
    parsed = both.drop(pcols)
    frames = []
    for pc in pcols:
        col = pc[len(_P):]
        hit = both.filter(pl.col(pc).is_not_null()).select(ROW, pc)
        if not hit.height:
            continue
        frames.append(
            hit.join(df.select(ROW, pl.col(col).alias("__v")), on=ROW)
            .select(pl.col(ROW).cast(pl.UInt32).alias("row_no"), pl.lit(col).alias("column_name"), pl.col("__v").alias("value"), pl.col(pc).alias("reason"))
        )
    if RAGGED in df.columns:  # a row of the wrong shape: its values are not trusted, one reason only
        shaped = df.filter(pl.col(RAGGED).is_not_null())
        frames = [f.filter(~pl.col("row_no").is_in(shaped.get_column(ROW).implode())) for f in frames]
        frames.append(_problem_frame(shaped, "", pl.col(RAGGED), pl.lit(None, dtype=pl.Utf8)))
    problems = pl.concat(frames) if frames else pl.DataFrame(schema=_PROBLEM_SCHEMA)
    bad_rows = problems.get_column("row_no").unique()
    c = _Checked(table, path, df, parsed.filter(~pl.col(ROW).is_in(bad_rows.implode())), problems, df.height,
                 prep.ignored, prep.normalised)

    # Natural key: the first clean row of a key loads, later ones are duplicates; a key loaded
    # by an earlier batch is not loaded again (one policy for every table).
    if table.key:
        key = list(table.key)
        label = ", ".join(key)
        kval = _text(table, key[0]) if len(key) == 1 else pl.concat_str(
            [_text(table, k).fill_null("(empty)") for k in key], separator=" / "
        )
        first = c.good.group_by(key).agg(pl.col(ROW).min().alias("__first"))
        dups = c.good.join(first, on=key, nulls_equal=True).filter(pl.col(ROW) != pl.col("__first"))
        if existing_keys is not None and existing_keys.height:
            again = c.good.join(existing_keys, on=key, how="inner", nulls_equal=True)
            c.reject(again, label, pl.format("{}: {} was already loaded in batch {}", pl.lit(label), kval, pl.col("batch_id")), kval)
            dups = dups.filter(~pl.col(ROW).is_in(again.get_column(ROW).implode()))
        c.reject(dups, label, pl.format("{}: duplicate of row {}", pl.lit(label), pl.col("__first")), kval)
    # Orphans: the parent key must be loaded (in this batch or an earlier one).
    for col, parent, _pcol in table.parents:
        keys = parent_keys.get(parent)
        if keys is None:
            continue
        orphans = c.good.filter(pl.col(col).is_not_null() & ~pl.col(col).is_in(keys.implode()))
        reason = pl.format("{}: {} not found in {}", pl.lit(col), pl.col(col), pl.lit(parent))
        if parent_rejected and parent in parent_rejected:  # the parent row is there but was rejected
            pfile, prej = parent_rejected[parent]
            orphans = orphans.join(prej.rename({prej.columns[0]: col}), on=col, how="left")
            reason = pl.when(pl.col("__prow").is_not_null()).then(
                pl.format("{} (its row {} in {} was rejected)", reason, pl.col("__prow"), pl.lit(pfile))
            ).otherwise(reason)
        c.reject(orphans, col, reason, pl.col(col))
    return c


# ---------------------------------------------------------------------------- consistency


def _fetch(con: duckdb.DuckDBPyConnection, sql: str, ids: pl.DataFrame) -> pl.DataFrame:
    """Run ``sql`` (which joins the registered frame ``__ids``) and return a Polars frame."""
    con.register("__ids", ids.to_arrow())
    try:
        return con.sql(sql).pl()
    finally:
        con.unregister("__ids")


def _check_against_visit(c: _Checked, visits: pl.DataFrame, settlements: pl.DataFrame | None) -> None:
    """A settlement or fee line must agree with its visit: same person, same institution; a fee
    line's settlement, when known, must be a settlement of the line's visit."""
    g = c.good  # every check sees the same rows: a row with two problems gets both reasons
    j = g.join(visits, on="mdtrt_id", how="inner")
    for col in ("fixmedins_code", "psn_no"):
        other = "__v_" + col
        bad = j.filter(pl.col(col) != pl.col(other))
        c.reject(bad, col, pl.format("{}: {} differs from its visit {} ({})", pl.lit(col), pl.col(col), pl.col("mdtrt_id"), pl.col(other)), pl.col(col))
    if settlements is None:
        return
    s = g.filter(pl.col("setl_id").is_not_null()).join(settlements, on="setl_id", how="left")
    wrong = s.filter(pl.col("__s_visit").is_not_null() & (pl.col("__s_visit") != pl.col("mdtrt_id")))
    c.reject(wrong, "setl_id", pl.format("setl_id: {} is a settlement of visit {}, not {}", pl.col("setl_id"), pl.col("__s_visit"), pl.col("mdtrt_id")), pl.col("setl_id"))
    unknown = s.filter(pl.col("__s_visit").is_null()).join(c.good.select(ROW), on=ROW, how="semi")
    c.note(unknown, "setl_id", pl.format("setl_id: {} not found in setl_d (loaded: the settlement may come in a later batch)", pl.col("setl_id")), pl.col("setl_id"))


def _check_refunds(c: _Checked, con: duckdb.DuckDBPyConnection) -> None:
    """Refund lines (negative cnt) must cancel something real.

    Linked (``init_feedetl_sn``): the line named exists (this batch or earlier), is of the same
    visit and code, and the refunds of it never exceed what is left of it (earlier batches'
    refunds first, then this file's in row order). Unlinked: some line of the same visit, code
    and day exists (this batch or earlier). Otherwise the refund is rejected: the netting would
    drop or misplace it silently.
    """
    col = "init_feedetl_sn"
    cols = ["bkkp_sn", "mdtrt_id", "hilist_code", "cnt"]
    linked = c.good.filter(pl.col(col).is_not_null())
    if linked.height:
        names = linked.select(pl.col(col).unique().alias("bkkp_sn"))
        prior = _fetch(con, "SELECT f.bkkp_sn, f.mdtrt_id, f.hilist_code, f.cnt FROM fee_list_d f JOIN __ids USING (bkkp_sn)", names)
        here = c.good.select(cols).join(names, on="bkkp_sn", how="semi")
        known = pl.concat([prior.cast({"cnt": pl.Decimal(18, 4)}), here])
        orphans = linked.filter(~pl.col(col).is_in(known.get_column("bkkp_sn").implode()))
        reason = pl.format("{}: {} not found in fee_list_d", pl.lit(col), pl.col(col))
        rk = c.rejected_keys() if orphans.height else None
        if rk is not None and rk.height:
            orphans = orphans.join(rk.rename({"bkkp_sn": col}), on=col, how="left")
            reason = pl.when(pl.col("__prow").is_not_null()).then(
                pl.format("{} (its row {} in {} was rejected)", reason, pl.col("__prow"), pl.lit(c.path.name))
            ).otherwise(reason)
        c.reject(orphans, col, reason, pl.col(col))
        orig = known.select(pl.col("bkkp_sn").alias(col), pl.col("mdtrt_id").alias("__o_visit"),
                            pl.col("hilist_code").alias("__o_code"), pl.col("cnt").alias("__o_cnt"))
        j = c.good.filter(pl.col(col).is_not_null()).join(orig, on=col, how="inner")
        other_visit = j.filter(pl.col("__o_visit") != pl.col("mdtrt_id"))
        c.reject(other_visit, col, pl.format("{}: {} is a line of visit {}, not {}", pl.lit(col), pl.col(col), pl.col("__o_visit"), pl.col("mdtrt_id")), pl.col(col))
        other_code = j.filter((pl.col("__o_visit") == pl.col("mdtrt_id")) & (pl.col("__o_code") != pl.col("hilist_code")))
        c.reject(other_code, col, pl.format("{}: {} is a line of code {}, not {}", pl.lit(col), pl.col(col), pl.col("__o_code"), pl.col("hilist_code")), pl.col(col))
        # quantities: what is left of each line after earlier batches' refunds
        refunds = j.filter((pl.col("cnt") < 0) & (pl.col("__o_visit") == pl.col("mdtrt_id")) & (pl.col("__o_code") == pl.col("hilist_code")))
        if refunds.height:
            done = _fetch(
                con,
                "SELECT f.init_feedetl_sn AS bkkp_sn, CAST(sum(-f.cnt) AS DECIMAL(18,4)) AS __done FROM fee_list_d f "
                "JOIN __ids ON f.init_feedetl_sn = __ids.bkkp_sn WHERE f.cnt < 0 GROUP BY 1",
                refunds.select(pl.col(col).unique().alias("bkkp_sn")),
            ).rename({"bkkp_sn": col})
            pending = (
                refunds.join(done, on=col, how="left")
                .with_columns((pl.col("__o_cnt") - pl.col("__done").fill_null(0)).alias("__left"), (-pl.col("cnt")).alias("__q"))
                .sort(ROW)
            )
            while pending.height:  # each pass rejects the first refund too many of each line
                acc = pending.with_columns(pl.col("__q").cum_sum().over(col).alias("__cum"))
                over = acc.filter(pl.col("__cum") > pl.col("__left")).group_by(col).agg(pl.all().sort_by(ROW).first())
                if not over.height:
                    break
                left_now = pl.max_horizontal(pl.col("__left") - pl.col("__cum") + pl.col("__q"), pl.lit(0).cast(pl.Decimal(18, 4)))
                c.reject(over, col, pl.format("{}: refunds {} units of {} but only {} is left", pl.lit(col), _num(pl.col("__q")), pl.col(col), _num(left_now)), pl.col(col))
                pending = pending.filter(~pl.col(ROW).is_in(over.get_column(ROW).implode()))
    # unlinked refunds: a line of the same visit, code and day must exist
    day = pl.col("fee_ocur_time").dt.date().alias("__day")
    unlinked = c.good.filter((pl.col("cnt") < 0) & pl.col(col).is_null()).with_columns(day)
    if unlinked.height:
        keys = ["mdtrt_id", "hilist_code", "__day"]
        wanted = unlinked.select(keys).unique()
        prior = _fetch(
            con,
            "SELECT DISTINCT f.mdtrt_id, f.hilist_code, CAST(f.fee_ocur_time AS DATE) AS __day FROM fee_list_d f "
            "JOIN __ids ON f.mdtrt_id = __ids.mdtrt_id AND f.hilist_code = __ids.hilist_code "
            "AND CAST(f.fee_ocur_time AS DATE) = __ids.__day WHERE f.cnt > 0",
            wanted,
        )
        here = c.good.filter(pl.col("cnt") > 0).with_columns(day).select(keys).join(wanted, on=keys, how="semi")
        found = pl.concat([prior.cast({"__day": pl.Date}), here]).unique()
        nothing = unlinked.join(found, on=keys, how="anti")
        c.reject(nothing, "cnt", pl.format("cnt: {} refunds nothing: visit {} has no line of code {} on {}",
                                           _num(pl.col("cnt")), pl.col("mdtrt_id"), pl.col("hilist_code"), pl.col("__day").dt.strftime("%Y-%m-%d")),
                 _num(pl.col("cnt")))


def _check_amounts(c: _Checked) -> None:
    """A line whose amount is not cnt x pric (within 0.01) loads, and is listed in data_quality."""
    diff = (pl.col("det_item_fee_sumamt") - pl.col("cnt") * pl.col("pric")).abs()
    off = c.good.filter(diff > pl.lit(Decimal("0.01")))
    c.note(off, "det_item_fee_sumamt",
           pl.format("det_item_fee_sumamt: {} differs from cnt × pric = {} × {} = {}", _num(pl.col("det_item_fee_sumamt")),
                     _num(pl.col("cnt")), _num(pl.col("pric")), _num(pl.col("cnt") * pl.col("pric"))),
           _num(pl.col("det_item_fee_sumamt")))


# ---------------------------------------------------------------------------- loading


def content_hash(files: dict[str, Path], digests: dict[Path, bytes] | None = None) -> str:
    """A digest of the batch's text, not of its bytes: a CSV counts as its UTF-8 text without
    BOM, with LF line endings and no trailing blank lines, so the same batch re-exported with
    CRLF, as GB18030 or with a BOM has the same hash (Parquet and XLSX files count as bytes).
    This only spares the work of a repeated load: the natural keys are the real guard.
    ``digests``: per-file digests already taken by :func:`read_file`."""
    h = hashlib.sha256()
    for name in sorted(files):
        path = files[name]
        d = (digests or {}).get(path)
        if d is None:
            if path.suffix.lower() == ".csv":
                tmp: dict[Path, bytes] = {}
                _read_csv(path, tmp)
                d = tmp[path]
            else:
                d = hashlib.sha256(path.read_bytes()).digest()
        h.update(name.encode())
        h.update(b"\0")
        h.update(d)
    return h.hexdigest()


def _existing_keys(con: duckdb.DuckDBPyConnection, table: Table) -> pl.DataFrame:
    key = ", ".join(db.ident(k) for k in table.key)
    return con.sql(f"SELECT {key}, min(batch_id) AS batch_id FROM {db.ident(table.name)} GROUP BY ALL").pl()


def _insert(con: duckdb.DuckDBPyConnection, c: _Checked, batch_id: int) -> None:
    """Insert the rows that passed; only contract names reach the SQL text, values are bound."""
    cols = c.table.column_names
    data = c.good.select([ROW, *cols]).rename({ROW: "source_row"}).to_arrow()
    con.register("__incoming", data)
    try:
        names = ", ".join(db.ident(x) for x in ["source_row", *cols])
        con.execute(f"INSERT INTO {db.ident(c.table.name)} (batch_id, {names}) SELECT ?, {names} FROM __incoming", [batch_id])
    finally:
        con.unregister("__incoming")


def _assert_required_present(con: duckdb.DuckDBPyConnection, c: _Checked, batch_id: int) -> None:
    """Checked, not assumed: no required column of a row this load wrote is NULL."""
    req = [col.name for col in c.table.columns if col.required]
    counts = ", ".join(f"count(*) FILTER (WHERE {db.ident(n)} IS NULL)" for n in req)
    got = con.execute(f"SELECT {counts} FROM {db.ident(c.table.name)} WHERE batch_id = ?", [batch_id]).fetchall()[0]
    for n, k in zip(req, got):
        if k:
            raise LoadError(
                f"{c.path}: {k} row(s) would load with the required column {n} empty; "
                "the load was undone (a loader bug: please report it with the file)"
            )


def load_batch(batch_dir: str | Path, con: duckdb.DuckDBPyConnection) -> LoadResult:
    """Load one batch folder into an open database. See the module doc for the guarantees."""
    batch_dir = Path(batch_dir)
    files = find_table_files(batch_dir)
    digests: dict[Path, bytes] = {}
    prepared = {name: prepare_table(TABLES[name], path, read_file(path, digests)) for name, path in files.items()}  # may raise
    digest = content_hash(files, digests)

    con.execute("BEGIN TRANSACTION")
    try:
        result = _load(con, batch_dir, prepared, digest)
        if result.already_loaded:
            con.execute("ROLLBACK")
        else:
            con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return result


def _load(con: duckdb.DuckDBPyConnection, batch_dir: Path, prepared: dict[str, _Prepared], digest: str) -> LoadResult:
    """Everything that touches the database; the caller wraps it in one transaction."""
    db.ensure_schema(con)
    prior = con.execute("SELECT batch_id FROM load_log WHERE content_hash = ?", [digest]).fetchall()
    if prior:
        return LoadResult(prior[0][0], digest, True)
    batch_id = con.execute("SELECT coalesce(max(batch_id), 0) + 1 FROM load_log").fetchall()[0][0]

    checked: list[_Checked] = []
    parent_keys: dict[str, pl.Series] = {}
    parent_rejected: dict[str, tuple[str, pl.DataFrame]] = {}
    for name in LOAD_ORDER:
        if name not in prepared:
            continue
        table = TABLES[name]
        existing = _existing_keys(con, table)
        for _c, parent, pcol in table.parents:
            if parent not in parent_keys:  # parent table not in this batch: earlier batches only
                parent_keys[parent] = con.sql(f"SELECT {db.ident(pcol)} FROM {db.ident(parent)}").pl().get_column(pcol)
        c = check_table(prepared[name], existing, parent_keys, parent_rejected)
        if name == "mdtrt_d":  # the parent of every claim table: earlier batches plus this one
            parent_keys[name] = pl.concat([existing.get_column("mdtrt_id"), c.good.get_column("mdtrt_id")])
            parent_rejected[name] = (c.path.name, c.rejected_keys())
        if name in ("setl_d", "fee_list_d"):
            this_visits = [x.good for x in checked if x.table.name == "mdtrt_d"]
            visits = pl.concat([
                _fetch(con, "SELECT v.mdtrt_id, v.psn_no, v.fixmedins_code FROM mdtrt_d v JOIN __ids USING (mdtrt_id)",
                       c.good.select("mdtrt_id").unique()),
                *[v.select("mdtrt_id", "psn_no", "fixmedins_code") for v in this_visits],
            ]).unique("mdtrt_id").rename({"psn_no": "__v_psn_no", "fixmedins_code": "__v_fixmedins_code"})
            settlements = None
            if name == "fee_list_d":
                settlements = pl.concat([
                    _fetch(con, "SELECT s.setl_id, s.mdtrt_id AS __s_visit FROM setl_d s JOIN __ids USING (setl_id)",
                           c.good.select("setl_id").drop_nulls().unique()),
                    *[x.good.select("setl_id", pl.col("mdtrt_id").alias("__s_visit")) for x in checked if x.table.name == "setl_d"],
                ]).unique("setl_id")
            _check_against_visit(c, visits, settlements)
        if name == "fee_list_d":
            _check_refunds(c, con)
            _check_amounts(c)
        checked.append(c)

    summaries = [
        TableSummary(c.table.name, c.path.name, c.read, c.good.height, c.read - c.good.height,
                     c.normalised, c.ignored, c.quality.height)
        for c in checked
    ]
    rejected = pl.concat(
        [
            c.problems.with_columns(pl.lit(c.path.name).alias("file"), pl.lit(c.table.name).alias("table_name"))
            for c in checked
        ]
    ).select("file", "table_name", "row_no", "column_name", "value", "reason").sort("file", "row_no", "column_name")
    quality = pl.concat(
        [c.quality.with_columns(pl.lit(c.path.name).alias("file"), pl.lit(c.table.name).alias("table_name")) for c in checked]
    ).select("file", "table_name", "row_no", "row_key", "column_name", "value", "reason").sort("file", "row_no", "column_name")

    for c in checked:
        _insert(con, c, batch_id)
    for c in checked:
        _assert_required_present(con, c, batch_id)
    con.register("__rejected", rejected.to_arrow())
    con.register("__quality", quality.to_arrow())
    try:
        con.execute(
            "INSERT INTO rejected_rows SELECT ?, file, table_name, row_no, column_name, value, reason FROM __rejected", [batch_id]
        )
        con.execute(
            "INSERT INTO data_quality SELECT ?, file, table_name, row_no, row_key, column_name, value, reason FROM __quality", [batch_id]
        )
    finally:
        con.unregister("__rejected")
        con.unregister("__quality")
    con.execute(
        "INSERT INTO load_log VALUES (?, ?, ?, now()::TIMESTAMP, ?)",
        [batch_id, digest, str(batch_dir.resolve()), json.dumps([s.__dict__ for s in summaries], ensure_ascii=False)],
    )
    return LoadResult(batch_id, digest, False, summaries, rejected, quality)
