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
begin date, code_names kind + code + institution). A row whose key was loaded by an earlier batch is rejected (``... was already
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

import codecs
import csv
import hashlib
import json
import tempfile
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from . import db, resources
from .contract import DATE, DEC, FILE_SUFFIXES, FREE_TEXT, LOAD_ORDER, NAME_KINDS, SQL_TYPE, STR, TABLES, TS, Table

ROW = "__row"
#: National dictionary codes of a fixed width: a value that lost its leading zero in Excel
#: ("5" for hosp_lv 05, "3" for chrgitm_lv 03) is read with it restored, in every format.
DICT_WIDTH = {"hosp_lv": 2, "chrgitm_lv": 2, "med_chrgitm_type": 2}
#: Codes stored as numbers (an Excel number cell, an integer Parquet column) lost their leading
#: zeros; all-digit national list codes are 15-digit service codes, so the zeros are restored.
NUMBER_CODE_WIDTH = {"hilist_code": 15, **DICT_WIDTH}
GEND_VALUES = ("0", "1", "2", "9")
#: columns whose value must be one of a fixed list (rejected with the list otherwise)
VALUE_DOMAINS = {"gend": GEND_VALUES, "kind": NAME_KINDS}
#: What a cell is trimmed of: Unicode White_Space (as Polars' strip_chars and Rust's trim).
WHITESPACE = (
    "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B)) + "\u2028\u2029\u202f\u205f\u3000"
)
CHUNK = 16 << 20  # bytes read at a time from a CSV file
BATCH_ROWS = 50_000  # rows of an XLSX sheet handed to DuckDB at a time


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


# ---------------------------------------------------------------------------- finding files


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
            raise LoadError(
                f"{batch_dir}: required table {t.name} is missing (looked for {t.name}.csv, .parquet or .xlsx)"
            )
    return found


def _unreadable(path: Path, e: BaseException) -> LoadError:
    first = str(e).splitlines()[0] if str(e).strip() else type(e).__name__
    return LoadError(f"{path}: unreadable: {first}")


# ---------------------------------------------------------------------------- CSV: a streaming pre-pass

_WS_BYTES = b"\r\n\t "  # what is stripped from the end of a CSV file (trailing blank lines)


@dataclass
class _CsvText:
    """A CSV file checked in one streaming pass: readable as UTF-8 (transcoded from GB18030
    into a temporary file when needed), its digest, where its content ends."""

    path: Path  # the file to read: the original or a UTF-8 copy
    start: int  # first byte after the BOM
    end: int  # byte after the last non-blank byte (trailing blank lines are ignored)
    size: int
    digest: bytes
    has_quote: bool


def _chunks(path: Path, size: int = CHUNK):
    with open(path, "rb") as fh:
        while True:
            b = fh.read(size)
            if not b:
                return
            yield b


def _scan_utf8(path: Path, chunks) -> _CsvText:
    """Hash, NUL check and content end of a UTF-8 byte stream already written to ``path``."""
    h = hashlib.sha256()
    pending = b""  # trailing blanks held back: hashed only if text follows them
    pos = start = end = 0
    has_quote = False
    first = True
    for b in chunks:
        if first:
            first = False
            if b.startswith(b"\xef\xbb\xbf"):
                b = b[3:]
                pos = start = 3
        if b"\x00" in b:
            raise LoadError(f"{path}: unreadable: binary content (NUL bytes), not a CSV text file")
        has_quote = has_quote or b'"' in b
        head = b.rstrip(_WS_BYTES)
        if head:
            data = pending + b
            cut = len(data) - (len(b) - len(head))
            h.update(data[:cut].replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
            pending = data[cut:]
            end = pos + len(head)
        else:
            pending += b
        pos += len(b)
    if end <= start:
        raise LoadError(f"{path}: unreadable: the file is empty")
    h.update(b"\n")
    return _CsvText(path, start, end, pos, h.digest(), has_quote)


def _csv_text(path: Path, tmp: Path) -> _CsvText:
    """Check a CSV file in streaming chunks; GB18030 text is transcoded to a UTF-8 temp file."""
    dec = codecs.getincrementaldecoder("utf-8")()
    utf8 = True
    nul = False
    bom = False
    for i, b in enumerate(_chunks(path)):
        if i == 0 and b.startswith(b"\xef\xbb\xbf"):
            bom, b = True, b[3:]
        nul = nul or b"\x00" in b
        if utf8:
            try:
                dec.decode(b)
            except UnicodeDecodeError:
                utf8 = False
        if nul:
            break
    if nul:
        raise LoadError(f"{path}: unreadable: binary content (NUL bytes), not a CSV text file")
    if utf8:
        try:
            dec.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8 = False
    if utf8:
        return _scan_utf8(path, _chunks(path))
    # GB18030: transcode to a UTF-8 file (the text as UTF-8 is what is read and hashed)
    out = tmp / f"t{len(list(tmp.iterdir()))}.csv"
    gb = codecs.getincrementaldecoder("gb18030")()
    offset = 0
    with open(out, "wb") as fh:
        for i, b in enumerate(_chunks(path)):
            if i == 0 and bom:
                b = b[3:]
            try:
                fh.write(gb.decode(b).encode("utf-8"))
            except UnicodeDecodeError as e:
                raise LoadError(f"{path}: unreadable: not UTF-8 or GB18030 text (byte {offset + e.start})") from None
            offset += len(b)
        try:
            fh.write(gb.decode(b"", final=True).encode("utf-8"))
        except UnicodeDecodeError as e:
            raise LoadError(f"{path}: unreadable: not UTF-8 or GB18030 text (byte {offset + e.start})") from None
    t = _scan_utf8(out, _chunks(out))
    return t


def _header(text: _CsvText) -> list[str]:
    with open(text.path, encoding="utf-8", newline="") as fh:
        fh.seek(text.start)
        row = next(csv.reader(fh), None)
    return row or []


@dataclass
class _Shape:
    records: int  # records after the header
    bad: list[tuple[int, int, int, int]]  # (record index, fields, first byte, byte after its newline)


def _shape_plain(text: _CsvText) -> _Shape:
    """Fields per record of a CSV without any quote character: commas + 1 per line (vectorised).

    Record 0 is the header. Only records whose field count differs from the header's are
    kept (with their byte range, so a clean copy can leave them out)."""
    bad: list[tuple[int, int, int, int]] = []
    n_head = None
    rec = 0  # index of the record being read
    rec_start = text.start
    carry = 0  # commas of the current record seen in earlier chunks
    last_byte = 0
    pos = text.start
    with open(text.path, "rb") as fh:
        fh.seek(pos)
        while pos < text.end:
            b = fh.read(min(CHUNK, text.end - pos))
            if not b:
                break
            arr = np.frombuffer(b, np.uint8)
            nl = np.flatnonzero(arr == 10)
            if len(nl):
                commas = np.flatnonzero(arr == 44)
                before = np.searchsorted(commas, nl)
                per = np.diff(before, prepend=0)
                per[0] += carry
                starts = np.empty(len(nl), np.int64)
                starts[0] = rec_start
                starts[1:] = nl[:-1] + 1 + pos
                ends = nl + pos
                length = ends - starts
                prev = np.where(nl > 0, arr[np.maximum(nl - 1, 0)], last_byte)
                empty = (length == 0) | ((length == 1) & (prev == 13))
                fields = np.where(empty, 0, per + 1)
                if n_head is None:
                    n_head = int(fields[0])
                idx = np.flatnonzero(fields != n_head)
                for k in idx:
                    r = rec + int(k)
                    if r:
                        bad.append((r, int(fields[k]), int(starts[k]), int(ends[k]) + 1))
                rec += len(nl)
                rec_start = int(nl[-1]) + 1 + pos
                carry = int(np.count_nonzero(arr[nl[-1] + 1 :] == 44))
            else:
                carry += int(np.count_nonzero(arr == 44))
            last_byte = int(arr[-1])
            pos += len(b)
    if rec_start < text.end:  # the last record, without a newline before the trailing blanks
        last_fields = carry + 1
        if n_head is None:
            n_head = last_fields
        elif last_fields != n_head:
            bad.append((rec, last_fields, rec_start, text.end))
        rec += 1
    return _Shape(rec - 1, bad)


def _shape_quoted(text: _CsvText) -> _Shape:
    """Fields per record of a CSV with quotes, read record by record (csv module)."""
    bad = []
    n = 0
    trailing: list[int] = []  # records at the end that are blank (ignored like trailing blank lines)
    with open(text.path, encoding="utf-8", newline="") as fh:
        fh.seek(text.start)
        reader = csv.reader(fh)
        n_head = len(next(reader, []))
        for i, r in enumerate(reader, start=1):
            n = i
            k = len(r)
            blank = k == 0 or (k == 1 and not r[0].strip("\t "))
            trailing = trailing + [i] if blank else []
            if k != n_head:
                bad.append((i, 0 if k == 0 else k, -1, -1))
    if trailing:  # blank records at the very end were cut by the old reader: not rows
        cut = set(trailing)
        bad = [x for x in bad if x[0] not in cut]
        n -= len(trailing)
    return _Shape(n, bad)


def _ragged_reason(fields: int, n_head: int) -> str:
    if fields == 0:
        return "the row is empty"
    if fields == 1:
        return f"the row has 1 field, the header has {n_head}"
    return f"the row has {fields} fields, the header has {n_head}"


def _clean_copy(text: _CsvText, shape: _Shape, tmp: Path, quoted: bool) -> Path:
    """A copy of the CSV without its ragged and blank records and trailing blanks."""
    out = tmp / f"c{len(list(tmp.iterdir()))}.csv"
    if not quoted or not shape.bad:  # byte ranges: the records kept are copied as they are
        with open(text.path, "rb") as src, open(out, "wb") as dst:
            pos = text.start
            for _r, _f, a, z in [*shape.bad, (None, None, text.end, text.end)]:
                src.seek(pos)
                left = a - pos
                while left > 0:
                    b = src.read(min(CHUNK, left))
                    dst.write(b)
                    left -= len(b)
                pos = z
            dst.write(b"\n")
        return out
    skip = {x[0] for x in shape.bad}
    with open(text.path, encoding="utf-8", newline="") as fh, open(out, "w", encoding="utf-8", newline="") as dst:
        fh.seek(text.start)
        w = csv.writer(dst, lineterminator="\n")
        for i, r in enumerate(csv.reader(fh)):
            if i > shape.records:
                break
            if i not in skip:
                w.writerow(r)
    return out


# ---------------------------------------------------------------------------- sources


@dataclass
class _Source:
    table: Table
    path: Path
    fmt: str
    names: list[str]  # the file's column names, lower-cased (contract names where they match)
    digest: bytes
    csv: _CsvText | None = None
    #: a Parquet file's column types, in file order (what staging casts from)
    arrow_types: list[pa.DataType] = field(default_factory=list)
    #: a Parquet file's rows, from its footer (how big its stage will be)
    rows: int = 0

    @property
    def ignored(self) -> list[str]:
        known = set(self.table.column_names)
        return [c for c in self.names if c not in known]

    @property
    def present(self) -> list[str]:
        got = set(self.names)
        return [c for c in self.table.column_names if c in got]


def _lower_names(path: Path, raw: list[str]) -> list[str]:
    lowered = [unicodedata.normalize("NFKC", c).lstrip("\ufeff").strip().lower() for c in raw]
    if len(set(lowered)) != len(lowered):
        dup = next(c for c in lowered if lowered.count(c) > 1)
        raise LoadError(f"{path}: column {dup} appears twice")
    return lowered


def _file_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    for b in _chunks(path):
        h.update(b)
    return h.digest()


def _open_source(table: Table, path: Path, tmp: Path) -> _Source:
    """Read what the load needs before the transaction: the header and the digest. A file that
    cannot be read at all stops the load here."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            text = _csv_text(path, tmp)
            src = _Source(table, path, "csv", _lower_names(path, _header(text)), text.digest, text)
        elif suffix == ".parquet":
            import pyarrow.parquet as pq

            schema = pq.read_schema(path)
            src = _Source(
                table,
                path,
                "parquet",
                _lower_names(path, list(schema.names)),
                _file_digest(path),
                arrow_types=list(schema.types),
                rows=pq.read_metadata(path).num_rows,
            )
        else:
            import openpyxl

            wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
            try:
                header = next(wb.worksheets[0].iter_rows(values_only=True), None)
            finally:
                wb.close()
            if not header:
                raise LoadError(f"{path}: unreadable: the first sheet is empty")
            names = [str(h).strip() if h is not None else f"column_{i + 1}" for i, h in enumerate(header)]
            lowered = [n.lower() for n in names]
            for n in lowered:
                if lowered.count(n) > 1:
                    raise LoadError(f"{path}: column {n} appears twice")
            src = _Source(table, path, "xlsx", _lower_names(path, names), _file_digest(path))
    except LoadError:
        raise
    except Exception as e:  # pyarrow/openpyxl/csv give many exception types for a broken file
        raise _unreadable(path, e) from None
    for col in table.columns:
        if col.required and col.name not in src.names:
            raise LoadError(f"{path}: required column {col.name} is missing")
    return src


def content_hash(files: dict[str, Path], digests: dict[Path, bytes]) -> str:
    """A digest of the batch's text, not of its bytes: a CSV counts as its UTF-8 text without
    BOM, with LF line endings and no trailing blank lines, so the same batch re-exported with
    CRLF, as GB18030 or with a BOM has the same hash (Parquet and XLSX files count as bytes).
    This only spares the work of a repeated load: the natural keys are the real guard."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode())
        h.update(b"\0")
        h.update(digests[files[name]])
    return h.hexdigest()


# ---------------------------------------------------------------------------- staging


def _stage_name(t: Table) -> str:
    return db.ident("__s_" + t.name)


def _good_name(t: Table) -> str:
    return db.ident("__g_" + t.name)


#: RE2 class of WHITESPACE; a cell is trimmed by a regexp only when its first or last character
#: is not printable ASCII (a cheap test; DuckDB's trim(x, characters) is ten times slower).
_WS_CLASS = r"[\t\n\x0B\f\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000}]"
_TRIM_RE = f"^{_WS_CLASS}+|{_WS_CLASS}+$"
#: a first or last character that is not printable ASCII (code point <= 32 or >= 127). One
#: regexp, not four ``ord()`` comparisons: the same test at the same speed on a large file, but
#: DuckDB plans it about five times faster, and a small batch's load is mostly planning.
_EDGE_RE = "^[^!-~]|[^!-~]$"


def _cell_sql(name: str, expr: str) -> str:
    """Trim, empty -> NULL, and a one-digit dictionary code padded (``5`` -> ``05``)."""
    v = f"nullif(CASE WHEN regexp_matches({expr}, {_lit(_EDGE_RE)}) THEN regexp_replace({expr}, {_lit(_TRIM_RE)}, '', 'g') ELSE {expr} END, '')"
    w = DICT_WIDTH.get(name)
    if w:  # digits only and shorter than the width: left-padded with zeros
        v = f"CASE WHEN regexp_full_match({v}, '[0-9]{{1,{w - 1}}}') THEN lpad({v}, {w}, '0') ELSE {v} END"
    return v


def _stage_sql(src: _Source, source: str, exprs: dict[str, str], row: str, in_file: bool = False) -> str:
    """The statement that stages ``source``'s cells as text; ``in_file``: in a table of the
    database (compressed as it is written, dropped before the load commits) instead of a
    temporary one (see :func:`_stage_in_file`)."""
    cols = ", ".join(f"{_cell_sql(n, exprs[n])} AS {db.ident(n)}" for n in src.present)
    kind = "TABLE" if in_file else "TEMP TABLE"
    return f"CREATE {kind} {_stage_name(src.table)} AS SELECT {row} AS {ROW}{', ' if cols else ''}{cols} FROM {source}"


#: bytes a staged row takes in memory, per column (DuckDB's 16-byte string header; longer
#: cells add their text: 1M fee lines of 25 columns staged took 356 MB)
STAGED_BYTES_PER_CELL = 16


def _stage_in_file(con: duckdb.DuckDBPyConnection, src: _Source) -> bool:
    """Whether a file's stage goes into the database file rather than a temporary table: when
    its cells as text would not fit in DuckDB's memory limit. A temporary table is kept
    uncompressed and what does not fit spills to disk as it is: 52.4M fee lines (about 18 GB
    of text by the 1M figure) under a limit of 6.1 GiB staged in 135 s, and each check that read
    the stage back cost six to fourteen times its 10M figure, five being linear (the load 358 s); the same stage written compressed
    to the database file loaded in 256 s. Below the limit the temporary table is cheaper
    (10.48M lines, 3.7 GB under 4.7 GiB: 47.6 s against 59.4). The file keeps the stage's space
    as free blocks: after 52.4M lines it was 5.0 GB against 2.65 GB staged in memory."""
    return src.rows * STAGED_BYTES_PER_CELL * (len(src.present) + 1) > resources.memory_limit_bytes(con)


def _dict_pad(name: str, x: str) -> str:
    w = DICT_WIDTH.get(name)
    return x.zfill(w) if w and x.isdigit() and len(x) < w else x


@dataclass
class _Staged:
    src: _Source
    read: int
    ragged: list[tuple[int, str]]  # (row, reason) of CSV rows of the wrong shape
    normalised: int = 0
    ragged_keys: list[tuple[int, str]] = field(default_factory=list)  # (row, key) of ragged rows
    phys: str = ""  # the table holding the cells (the stage itself, or under a view for CSV)
    key: str = ROW  # its column that identifies a row (rowid under a view)


def _stage_csv(con: duckdb.DuckDBPyConnection, src: _Source, tmp: Path) -> _Staged:
    text = src.csv
    assert text is not None
    n_head = len(src.names)
    if text.has_quote:
        shape = _shape_quoted(text)
    else:
        shape = _shape_plain(text)
    tail = text.size - text.end
    clean_tail = True
    if tail:
        with open(text.path, "rb") as fh:
            fh.seek(text.end)
            after = fh.read(3)
        clean_tail = after in (b"\n", b"\r\n")
    path = text.path
    if shape.bad or not clean_tail:
        path = _clean_copy(text, shape, tmp, text.has_quote)
    bad_rows = np.array([r for r, *_ in shape.bad], dtype=np.int64)
    rows = np.arange(1, shape.records + 1, dtype=np.int64)
    if len(bad_rows):
        rows = rows[~np.isin(rows, bad_rows)]
    good = len(rows)
    columns = "{" + ", ".join(f"'c{i}': 'VARCHAR'" for i in range(n_head)) + "}"
    t = src.table
    raw = db.ident("__r_" + t.name)
    try:
        # read in parallel; the table keeps the file's order (preserve_insertion_order), so a
        # row's rowid is its place among the well-formed records
        cols = ", ".join(f"{_cell_sql(n, f'c{src.names.index(n)}')} AS {db.ident(n)}" for n in src.present)
        con.execute(
            f"CREATE TEMP TABLE {raw} AS SELECT {cols} FROM read_csv($path, header = true, auto_detect = false, "
            f"columns = {columns}, delim = ',', quote = '\"', escape = '\"', strict_mode = false, max_line_size = 100000000)",
            {"path": str(path)},
        )
    except duckdb.Error as e:
        raise _unreadable(src.path, e) from None
    got, base = con.execute(f"SELECT count(*), coalesce(min(rowid), 0) FROM {raw}").fetchall()[0]
    base = int(base)  # rows written in a transaction are numbered from a large offset
    if got != good:
        raise LoadError(f"{src.path}: unreadable: found {good} rows but parsed {got}")
    if not shape.bad:  # row number = header + place
        con.execute(
            f"CREATE TEMP VIEW {_stage_name(t)} AS SELECT CAST(rowid - {base} + 2 AS INTEGER) AS {ROW}, * FROM {raw}"
        )
    else:  # the well-formed records' row numbers, in order
        con.register(
            "__rows", pa.table({"k": pa.array(np.arange(good), pa.int64()), "r": pa.array(rows + 1, pa.int32())})
        )
        try:
            con.execute(f"CREATE TEMP TABLE {db.ident('__m_' + t.name)} AS SELECT * FROM __rows")
        finally:
            con.unregister("__rows")
        con.execute(
            f"CREATE TEMP VIEW {_stage_name(t)} AS SELECT m.r AS {ROW}, s.* FROM {raw} s "
            f"JOIN {db.ident('__m_' + t.name)} m ON m.k = s.rowid - {base}"
        )
    ragged = [(r + 1, _ragged_reason(f, n_head)) for r, f, *_ in shape.bad]
    st = _Staged(src, shape.records, ragged, phys=raw, key="rowid")
    if shape.bad and len(t.key) == 1:
        st.ragged_keys = _ragged_keys(text, shape, src.names.index(t.key[0]))
    return st


def _ragged_keys(text: _CsvText, shape: _Shape, idx: int) -> list[tuple[int, str]]:
    """The key cell of each ragged record that reaches it, prepared like any cell: the row is
    rejected, but a child row naming that key is told where its parent went."""
    bad = {r for r, *_ in shape.bad}
    last = max(bad)
    out = []
    with open(text.path, encoding="utf-8", newline="") as fh:
        fh.seek(text.start)
        for i, r in enumerate(csv.reader(fh)):
            if i in bad and len(r) > idx:
                v = r[idx].strip(WHITESPACE)
                if not v.isascii():
                    v = unicodedata.normalize("NFKC", v).strip(WHITESPACE)
                if v:
                    out.append((i + 1, v))
            if i >= last:
                break
    return out


def _stage_parquet(con: duckdb.DuckDBPyConnection, src: _Source) -> _Staged:
    types = src.arrow_types
    exprs = {}
    for n in src.present:
        i = src.names.index(n)
        t = types[i]
        ref = f"#{i + 1}"
        if pa.types.is_timestamp(t):
            exprs[n] = f"strftime({ref}, '%Y-%m-%d %H:%M:%S')"
        elif pa.types.is_date(t):
            exprs[n] = f"strftime({ref}, '%Y-%m-%d')"
        elif pa.types.is_integer(t) and n in NUMBER_CODE_WIDTH:
            w = NUMBER_CODE_WIDTH[n]
            x = f"CAST({ref} AS VARCHAR)"
            exprs[n] = f"CASE WHEN length({x}) < {w} THEN lpad({x}, {w}, '0') ELSE {x} END"
        else:
            exprs[n] = f"CAST({ref} AS VARCHAR)"
    try:
        con.execute(
            _stage_sql(
                src,
                "read_parquet($path, file_row_number = true)",
                exprs,
                "CAST(file_row_number + 2 AS INTEGER)",
                in_file=_stage_in_file(con, src),
            ),
            {"path": str(src.path)},
        )
    except duckdb.Error as e:
        raise _unreadable(src.path, e) from None
    n = con.execute(f"SELECT count(*) FROM {_stage_name(src.table)}").fetchall()[0][0]
    return _Staged(src, n, [])


def _excel_number(v: float) -> str:
    """A number cell as Excel shows it: 15 significant digits, no float noise (0.1+0.2 -> 0.3)."""
    if v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    out = format(v, ".15g")
    if "e" in out:  # very small or large: write it out plainly
        out = format(v, ".15f").rstrip("0").rstrip(".")
    return out


def _xlsx_cell(v, width):
    if v is None:
        return None
    if isinstance(v, datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S") if (v.hour or v.minute or v.second) else v.strftime("%Y-%m-%d")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        out = _excel_number(float(v)) if isinstance(v, float) else str(v)
        return out.zfill(width) if width and out.isdigit() else out
    return str(v)


def _stage_xlsx(con: duckdb.DuckDBPyConnection, src: _Source) -> _Staged:
    """Stream the first sheet's rows into DuckDB in Arrow batches (never the whole sheet)."""
    import openpyxl

    present = src.present
    idx = [src.names.index(n) for n in present]
    widths = [NUMBER_CODE_WIDTH.get(n) for n in present]
    schema = pa.schema([("r", pa.int32())] + [(f"c{k}", pa.string()) for k in range(len(present))])
    count = [0]
    wb = openpyxl.load_workbook(src.path, read_only=True, data_only=True)

    def batches():
        rows = wb.worksheets[0].iter_rows(values_only=True)
        next(rows, None)  # the header
        buf: list[tuple] = []
        blank: list[tuple] = []  # empty rows held back: only rows before a filled one count
        row_no = 1
        for r in rows:
            row_no += 1
            cells = tuple(_xlsx_cell(r[i] if i < len(r) else None, w) for i, w in zip(idx, widths))
            if all(v is None for v in r):
                blank.append((row_no, cells))
                continue
            buf.extend(blank)
            blank = []
            buf.append((row_no, cells))
            if len(buf) >= BATCH_ROWS:
                yield _xlsx_batch(buf, schema)
                count[0] += len(buf)
                buf = []
        if buf:
            count[0] += len(buf)
            yield _xlsx_batch(buf, schema)

    try:
        reader = pa.RecordBatchReader.from_batches(schema, batches())
        con.register("__xlsx", reader)
        exprs = {n: f"c{k}" for k, n in enumerate(present)}
        con.execute(_stage_sql(src, "__xlsx", exprs, "r"))
    except LoadError:
        raise
    except Exception as e:
        raise _unreadable(src.path, e) from None
    finally:
        con.unregister("__xlsx")
        wb.close()
    return _Staged(src, count[0], [])


def _xlsx_batch(buf: list[tuple], schema: pa.Schema) -> pa.RecordBatch:
    cols = [pa.array([r for r, _ in buf], pa.int32())]
    for k in range(len(schema) - 1):
        cols.append(pa.array([c[k] for _, c in buf], pa.string()))
    return pa.RecordBatch.from_arrays(cols, schema=schema)


def _normalise(con: duckdb.DuckDBPyConnection, st: _Staged) -> None:
    """NFKC on the rare cells holding a non-ASCII character (all columns but free-text names):
    found in SQL, fixed in Python, written back; counts the cells changed."""
    t = st.src.table
    cols = [c for c in st.src.present if c not in FREE_TEXT]
    if not cols:
        return
    stage = st.phys or _stage_name(t)
    wide = " OR ".join(f"strlen({db.ident(c)}) <> length({db.ident(c)})" for c in cols)
    sel = ", ".join(db.ident(c) for c in cols)
    # the rows concerned go to a temp table, then through Python a slice at a time: memory stays
    # bounded even when every row of a file is full-width
    n = con.execute(
        f"CREATE OR REPLACE TEMP TABLE __wide AS SELECT {st.key} AS __k, {sel} FROM {stage} WHERE {wide}"
    ).fetchall()[0][0]
    if not n:  # the usual case: every cell is ASCII (one statement, not six)
        con.execute("DROP TABLE __wide")
        return
    con.execute("CREATE OR REPLACE TEMP TABLE __nfkc AS SELECT * FROM __wide LIMIT 0")
    base = con.execute("SELECT coalesce(min(rowid), 0) FROM __wide").fetchall()[0][0]
    changed = 0
    for a in range(0, n, BATCH_ROWS):
        rows = con.execute(
            "SELECT * FROM __wide WHERE rowid >= ? AND rowid < ?", [base + a, base + a + BATCH_ROWS]
        ).fetchall()
        fixed = []
        for row in rows:
            new = list(row)
            for k, c in enumerate(cols, start=1):
                v = row[k]
                if v is None or v.isascii():
                    continue
                x = unicodedata.normalize("NFKC", v).strip(WHITESPACE)
                if x != v:
                    changed += 1
                    new[k] = _dict_pad(c, x) if x else None
            if new != list(row):
                fixed.append(new)
        if fixed:
            con.register("__fix", pa.table({name: [r[i] for r in fixed] for i, name in enumerate(["__k", *cols])}))
            try:
                con.execute("INSERT INTO __nfkc SELECT * FROM __fix")
            finally:
                con.unregister("__fix")
    st.normalised = changed
    if changed:
        sets = ", ".join(f"{db.ident(c)} = n.{db.ident(c)}" for c in cols)
        con.execute(f"UPDATE {stage} SET {sets} FROM __nfkc AS n WHERE {stage}.{st.key} = n.__k")
    con.execute("DROP TABLE __wide")
    con.execute("DROP TABLE __nfkc")


# ---------------------------------------------------------------------------- checking rows

_DEC_RE = r"[+-]?[0-9]{1,14}(\.[0-9]{1,4})?"
_DEC_ANY_RE = r"[+-]?[0-9]+(\.[0-9]+)?"
_INT_RE = r"[+-]?[0-9]{1,9}"
_TS_FORMATS = "['%Y-%m-%d %H:%M:%S', '%Y-%m-%dT%H:%M:%S', '%Y-%m-%d']"


def _lit(text: str) -> str:
    """A constant of this module as an SQL string literal (never input)."""
    assert "'" not in text
    return f"'{text}'"


def _typed(col) -> str:
    x = db.ident(col.name)
    if col.type == STR:
        return x
    if col.type == DATE:
        return f"CAST(try_strptime({x}, '%Y-%m-%d') AS DATE)"
    if col.type == TS:
        return f"try_strptime({x}, {_TS_FORMATS})"
    if col.type == DEC:  # the view holds only cells that passed _reason: the cast is exact
        return f"TRY_CAST({x} AS DECIMAL(18,4))"
    return f"TRY_CAST({x} AS INTEGER)"


def _reason(col) -> str:
    """Per row: why the cell is not acceptable, or NULL."""
    x = db.ident(col.name)
    name = col.name
    if col.type == STR:
        bad = "NULL"
    elif col.type == DATE:
        bad = f"""CASE WHEN {x} IS NOT NULL AND try_strptime({x}, '%Y-%m-%d') IS NULL THEN '{name}: "' || {x} || '" is not a date (YYYY-MM-DD)' END"""
    elif col.type == TS:
        bad = f"""CASE WHEN {x} IS NOT NULL AND try_strptime({x}, {_TS_FORMATS}) IS NULL THEN '{name}: "' || {x} || '" is not a time (YYYY-MM-DD HH:MM:SS)' END"""
    elif col.type == DEC:
        bad = (
            f"""CASE WHEN {x} IS NULL OR regexp_full_match({x}, {_lit(_DEC_RE)}) THEN NULL """
            f"""WHEN regexp_full_match({x}, {_lit(_DEC_ANY_RE)}) THEN '{name}: "' || {x} || '" has more than 4 decimals or is too large' """
            f"""ELSE '{name}: "' || {x} || '" is not a number' END"""
        )
    else:
        bad = f"""CASE WHEN {x} IS NOT NULL AND NOT regexp_full_match({x}, {_lit(_INT_RE)}) THEN '{name}: "' || {x} || '" is not a whole number' END"""
    if col.required:
        bad = f"CASE WHEN {x} IS NULL THEN '{name}: required value is missing' ELSE {bad} END"
    if name in VALUE_DOMAINS:
        values = VALUE_DOMAINS[name]
        allowed = ", ".join(_lit(v) for v in values)
        bad = (
            f"""CASE WHEN {x} IS NOT NULL AND {x} NOT IN ({allowed}) THEN '{name}: "' || {x} || '" is not one of """
            f"""{", ".join(values)}' ELSE {bad} END"""
        )
    return bad


def _num(x: str) -> str:
    """SQL: a decimal without trailing zeros (50.0000 -> 50, 2.5000 -> 2.5)."""
    return f"regexp_replace(regexp_replace(CAST({x} AS VARCHAR), '(\\.[0-9]*?)0+$', '\\1'), '\\.$', '')"


def _num_py(d: Decimal) -> str:
    s = format(Decimal(d), "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _text(t: Table, name: str, alias: str = "g") -> str:
    """SQL: a typed column as the contract writes it (for messages)."""
    c = f"{alias}.{db.ident(name)}"
    typ = t.column(name).type
    if typ == TS:
        return f"strftime({c}, '%Y-%m-%d %H:%M:%S')"
    if typ == DATE:
        return f"strftime({c}, '%Y-%m-%d')"
    if typ == DEC:
        return _num(c)
    return f"CAST({c} AS VARCHAR)"


_PROBLEMS = "__problems"
_QUALITY = "__quality"


@dataclass
class _Checked:
    table: Table
    path: Path
    read: int
    ignored: list[str]
    normalised: int
    good: str  # the temp view of rows that load (typed, with __row)
    ragged_keys: list[tuple[int, str]] = field(default_factory=list)
    loaded: int = 0
    quality: int = 0


class _Checker:
    """The checks of one load, as SQL over the staged tables; problems and notes are collected
    in temp tables (file, table, row, column, value, reason)."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con
        con.execute(
            f"CREATE TEMP TABLE {_PROBLEMS} (file VARCHAR, table_name VARCHAR, row_no INTEGER, column_name VARCHAR, value VARCHAR, reason VARCHAR)"
        )
        con.execute(
            f"CREATE TEMP TABLE {_QUALITY} (file VARCHAR, table_name VARCHAR, row_no INTEGER, row_key VARCHAR, column_name VARCHAR, value VARCHAR, reason VARCHAR)"
        )

    def reject(self, c: _Checked, select: str, params: dict | None = None) -> None:
        """``select`` yields (row_no, column_name, value, reason) of rows of ``c.good``: they are
        recorded and so leave the good rows (all at once: every reason of the query is kept)."""
        con = self.con
        # (dropped with the load's other temp tables: each call replaces it)
        n = con.execute(f"CREATE OR REPLACE TEMP TABLE __new AS {select}", params or {}).fetchall()[0][0]
        if n:
            con.execute(
                f"INSERT INTO {_PROBLEMS} SELECT $file, $table, row_no, column_name, value, reason FROM __new",
                {"file": c.path.name, "table": c.table.name},
            )

    def note(self, c: _Checked, select: str, params: dict | None = None) -> None:
        """``select`` yields (row_no, row_key, column_name, value, reason): listed in data_quality."""
        p = dict(params or {})
        p.update(file=c.path.name, table=c.table.name)
        self.con.execute(f"INSERT INTO {_QUALITY} SELECT $file, $table, * FROM ({select})", p)

    def rejected_keys(self, c: _Checked, stage: str) -> str:
        """A temp table: key value -> its first row, for keys of rows that did not load (one-column keys)."""
        k = db.ident(c.table.key[0])
        name = db.ident("__rk_" + c.table.name)
        ragged = ""
        if c.ragged_keys:
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE {db.ident('__rg_' + c.table.name)} (k VARCHAR, r INTEGER)")
            self.con.executemany(
                f"INSERT INTO {db.ident('__rg_' + c.table.name)} VALUES (?, ?)", [(v, r) for r, v in c.ragged_keys]
            )
            ragged = f"UNION ALL SELECT k, r FROM {db.ident('__rg_' + c.table.name)}"
        self.con.execute(
            f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT k, min(r) AS prow FROM ("
            f"SELECT s.{k} AS k, s.{ROW} AS r FROM {stage} s "
            f"SEMI JOIN (SELECT row_no FROM {_PROBLEMS} WHERE table_name = $t) p ON s.{ROW} = p.row_no {ragged}) "
            f"WHERE k IS NOT NULL AND k NOT IN (SELECT {k} FROM {c.good}) GROUP BY 1",
            {"t": c.table.name},
        )
        return name

    def check_table(self, st: _Staged, parent_rejected: dict[str, tuple[str, str]]) -> _Checked:
        """Types, required values, natural key (in the file and against earlier batches), parents."""
        con, src, t = self.con, st.src, st.src.table
        stage = _stage_name(t)
        present = set(src.present)
        if st.ragged:  # a row of the wrong shape: its values are not trusted, one reason only
            con.register(
                "__ragged",
                pa.table(
                    {"row_no": pa.array([r for r, _ in st.ragged], pa.int32()), "reason": [x for _, x in st.ragged]}
                ),
            )
            try:
                con.execute(
                    f"INSERT INTO {_PROBLEMS} SELECT $file, $table, row_no, '', NULL, reason FROM __ragged",
                    {"file": src.path.name, "table": t.name},
                )
            finally:
                con.unregister("__ragged")
        # one pass finds the rows with any bad cell; each cell's reason is then taken from those few
        checked = [
            col
            for col in t.columns
            if col.name in present and not (col.type == STR and not col.required and col.name not in VALUE_DOMAINS)
        ]
        if checked:
            n_bad = con.execute(
                f"CREATE OR REPLACE TEMP TABLE __bad AS SELECT * FROM {stage} WHERE coalesce("
                + ", ".join(f"({_reason(col)})" for col in checked)
                + ") IS NOT NULL"
            ).fetchall()[0][0]
            if n_bad:  # every bad cell of those few rows, all columns in one statement
                cells = " UNION ALL ".join(
                    f"SELECT {ROW}, {_lit(col.name)} AS col, {db.ident(col.name)} AS value, {_reason(col)} AS reason FROM __bad"
                    for col in checked
                )
                con.execute(
                    f"INSERT INTO {_PROBLEMS} SELECT $file, $table, {ROW}, col, value, reason "
                    f"FROM ({cells}) WHERE reason IS NOT NULL",
                    {"file": src.path.name, "table": t.name},
                )
            con.execute("DROP TABLE __bad")
        typed = ", ".join(
            f"{_typed(col) if col.name in present else f'CAST(NULL AS {SQL_TYPE[col.type]})'} AS {db.ident(col.name)}"
            for col in t.columns
        )
        # the rows that load: a view (typed on the fly) of the staged rows without a problem so far;
        # a check that rejects rows adds them to the problems, and they leave the view
        good = _good_name(t)
        con.execute(
            f"CREATE TEMP VIEW {good} AS SELECT {ROW}, {typed} FROM {stage} "
            f"ANTI JOIN (SELECT row_no FROM {_PROBLEMS} WHERE table_name = {_lit(t.name)}) p ON {ROW} = p.row_no"
        )
        c = _Checked(t, src.path, st.read, src.ignored, st.normalised, good, ragged_keys=st.ragged_keys)

        # Natural key: the first clean row of a key loads, later ones are duplicates; a key loaded
        # by an earlier batch is not loaded again (one policy for every table).
        if t.key:
            label = ", ".join(t.key)
            kval = (
                _text(t, t.key[0])
                if len(t.key) == 1
                else "concat_ws(' / ', " + ", ".join(f"coalesce({_text(t, k)}, '(empty)')" for k in t.key) + ")"
            )
            keys = ", ".join(db.ident(k) for k in t.key)
            on = " AND ".join(f"g.{db.ident(k)} IS NOT DISTINCT FROM e.{db.ident(k)}" for k in t.key)
            on_dup = " AND ".join(f"g.{db.ident(k)} IS NOT DISTINCT FROM d.{db.ident(k)}" for k in t.key)
            gkeys = ", ".join(f"g.{db.ident(k)}" for k in t.key)
            # duplicate keys first (a grouping), then the first row of each only over their rows:
            # a window partitioned by the key over every row spilled at 50M lines
            self.reject(
                c,
                f"""
                WITH dup AS (SELECT {keys} FROM {good} GROUP BY ALL HAVING count(*) > 1),
                     f AS (SELECT g.{ROW}, min(g.{ROW}) OVER (PARTITION BY {gkeys}) AS first
                           FROM {good} g SEMI JOIN dup d ON {on_dup}),
                     prior AS (SELECT g.{ROW}, min(e.batch_id) AS b FROM {good} g JOIN {db.ident(t.name)} e ON {on} GROUP BY g.{ROW})
                SELECT g.{ROW} AS row_no, $label AS column_name, {kval} AS value,
                       CASE WHEN prior.b IS NOT NULL THEN $label || ': ' || {kval} || ' was already loaded in batch ' || CAST(prior.b AS VARCHAR)
                            ELSE $label || ': duplicate of row ' || CAST(f.first AS VARCHAR) END AS reason
                FROM {good} g LEFT JOIN f USING ({ROW}) LEFT JOIN prior USING ({ROW})
                WHERE prior.b IS NOT NULL OR f.first <> g.{ROW}""",
                {"label": label},
            )
        # Orphans: the parent key must be loaded (in this batch or an earlier one).
        for col, parent, pcol in t.parents:
            x, pt, pc = db.ident(col), db.ident(parent), db.ident(pcol)
            this = f"UNION ALL SELECT {pc} FROM {_good_name(TABLES[parent])}" if parent in parent_rejected else ""
            rk, pfile = parent_rejected.get(parent, (None, None))
            ann = (
                "coalesce(' (its row ' || CAST(r.prow AS VARCHAR) || ' in ' || $pfile || ' was rejected)', '')"
                if rk
                else "''"
            )
            join = f"LEFT JOIN {rk} r ON r.k = g.{x}" if rk else ""
            self.reject(
                c,
                f"""
                SELECT g.{ROW} AS row_no, $col AS column_name, g.{x} AS value,
                       $col || ': ' || g.{x} || ' not found in ' || $parent || {ann} AS reason
                FROM {good} g {join}
                WHERE g.{x} IS NOT NULL AND g.{x} NOT IN (SELECT {pc} FROM {pt} {this})""",
                {"col": col, "parent": parent, **({"pfile": pfile} if rk else {})},
            )
        return c

    def check_against_visit(self, c: _Checked, fee: bool) -> None:
        """A settlement or fee line must agree with its visit: same person, same institution; a fee
        line's settlement, when known, must be a settlement of the line's visit."""
        good = c.good
        visits = f"(SELECT mdtrt_id, psn_no, fixmedins_code FROM mdtrt_d UNION ALL SELECT mdtrt_id, psn_no, fixmedins_code FROM {_good_name(TABLES['mdtrt_d'])})"
        parts = [
            f"""SELECT g.{ROW} AS row_no, '{col}' AS column_name, g.{col} AS value,
                       '{col}: ' || g.{col} || ' differs from its visit ' || g.mdtrt_id || ' (' || v.{col} || ')' AS reason
                FROM {good} g JOIN {visits} v USING (mdtrt_id) WHERE g.{col} <> v.{col}"""
            for col in ("fixmedins_code", "psn_no")
        ]
        settlements = f"(SELECT setl_id, mdtrt_id AS s_visit FROM setl_d UNION ALL SELECT setl_id, mdtrt_id FROM {_good_name(TABLES['setl_d'])})"
        if fee:  # every check sees the same rows: a row with two problems gets both reasons
            parts.append(f"""SELECT g.{ROW}, 'setl_id', g.setl_id,
                       'setl_id: ' || g.setl_id || ' is a settlement of visit ' || s.s_visit || ', not ' || g.mdtrt_id
                FROM {good} g JOIN {settlements} s USING (setl_id) WHERE s.s_visit <> g.mdtrt_id""")
            self.con.execute(
                f"CREATE OR REPLACE TEMP TABLE __unknown AS SELECT g.{ROW}, g.bkkp_sn, g.setl_id FROM {good} g "
                f"WHERE g.setl_id IS NOT NULL AND g.setl_id NOT IN (SELECT setl_id FROM {settlements})"
            )
        self.reject(c, " UNION ALL ".join(parts))
        if fee:
            self.note(
                c,
                f"""SELECT u.{ROW}, u.bkkp_sn, 'setl_id', u.setl_id,
                'setl_id: ' || u.setl_id || ' not found in setl_d (loaded: the settlement may come in a later batch)'
                FROM __unknown u SEMI JOIN {good} g ON g.{ROW} = u.{ROW}""",
            )
            self.con.execute("DROP TABLE __unknown")

    def check_refunds(self, c: _Checked) -> None:
        """Refund lines (negative cnt) must cancel something real.

        Linked (``init_feedetl_sn``): the line named exists (this batch or earlier), is of the same
        visit and code, and the refunds of it never exceed what is left of it (earlier batches'
        refunds first, then this file's in row order). Unlinked: some line of the same visit, code
        and day exists (this batch or earlier). Otherwise the refund is rejected: the netting would
        drop or misplace it silently.
        """
        con, good = self.con, c.good
        n_linked = con.execute(f"SELECT count(*) FROM {good} WHERE init_feedetl_sn IS NOT NULL").fetchall()[0][0]
        if n_linked:
            con.execute(f"""CREATE OR REPLACE TEMP TABLE __known AS
                WITH names AS (SELECT DISTINCT init_feedetl_sn AS bkkp_sn FROM {good} WHERE init_feedetl_sn IS NOT NULL)
                SELECT f.bkkp_sn, f.mdtrt_id, f.hilist_code, f.cnt FROM fee_list_d f SEMI JOIN names USING (bkkp_sn)
                UNION ALL SELECT g.bkkp_sn, g.mdtrt_id, g.hilist_code, g.cnt FROM {good} g SEMI JOIN names USING (bkkp_sn)""")
            orphan = (
                f"SELECT g.{ROW} FROM {good} g WHERE g.init_feedetl_sn IS NOT NULL "
                "AND g.init_feedetl_sn NOT IN (SELECT bkkp_sn FROM __known)"
            )
            if con.execute(f"SELECT count(*) FROM ({orphan})").fetchall()[0][0]:
                rk = self.rejected_keys(c, _stage_name(c.table))
                self.reject(
                    c,
                    f"""SELECT g.{ROW} AS row_no, 'init_feedetl_sn' AS column_name, g.init_feedetl_sn AS value,
                    'init_feedetl_sn: ' || g.init_feedetl_sn || ' not found in fee_list_d'
                    || coalesce(' (its row ' || CAST(r.prow AS VARCHAR) || ' in ' || $file || ' was rejected)', '') AS reason
                    FROM {good} g LEFT JOIN {rk} r ON r.k = g.init_feedetl_sn
                    WHERE g.{ROW} IN ({orphan})""",
                    {"file": c.path.name},
                )
            con.execute(f"""CREATE OR REPLACE TEMP TABLE __j AS
                SELECT g.{ROW}, g.init_feedetl_sn, g.mdtrt_id, g.hilist_code, g.cnt,
                       o.mdtrt_id AS o_visit, o.hilist_code AS o_code, o.cnt AS o_cnt
                FROM {good} g JOIN __known o ON o.bkkp_sn = g.init_feedetl_sn""")
            self.reject(
                c,
                f"""
                SELECT {ROW} AS row_no, 'init_feedetl_sn' AS column_name, init_feedetl_sn AS value,
                       'init_feedetl_sn: ' || init_feedetl_sn || ' is a line of visit ' || o_visit || ', not ' || mdtrt_id AS reason
                FROM __j WHERE o_visit <> mdtrt_id
                UNION ALL
                SELECT {ROW}, 'init_feedetl_sn', init_feedetl_sn,
                       'init_feedetl_sn: ' || init_feedetl_sn || ' is a line of code ' || o_code || ', not ' || hilist_code
                FROM __j WHERE o_visit = mdtrt_id AND o_code <> hilist_code""",
            )
            # quantities: what is left of each line after earlier batches' refunds, then this file's in row order
            con.execute(f"""CREATE OR REPLACE TEMP TABLE __ref AS
                WITH done AS (SELECT f.init_feedetl_sn, sum(-f.cnt) AS done FROM fee_list_d f
                              WHERE f.cnt < 0 AND f.init_feedetl_sn IN (SELECT init_feedetl_sn FROM __j) GROUP BY 1)
                SELECT j.{ROW}, j.init_feedetl_sn, -j.cnt AS q, j.o_cnt - coalesce(d.done, 0) AS lft
                FROM __j j LEFT JOIN done d USING (init_feedetl_sn)
                WHERE j.cnt < 0 AND j.o_visit = j.mdtrt_id AND j.o_code = j.hilist_code""")
            over = con.execute(f"""
                SELECT {ROW}, init_feedetl_sn, q, lft FROM __ref WHERE init_feedetl_sn IN (
                    SELECT init_feedetl_sn FROM (SELECT init_feedetl_sn, lft,
                        sum(q) OVER (PARTITION BY init_feedetl_sn ORDER BY {ROW}) AS cum FROM __ref) WHERE cum > lft)
                ORDER BY init_feedetl_sn, {ROW}""").fetchall()
            rows = []
            taken: dict[str, Decimal] = {}
            for row, orig, q, left in over:  # row order per line: a refund too many is rejected, later ones may fit
                before = taken.get(orig, Decimal(0))
                if before + q > left:
                    rows.append(
                        (
                            row,
                            orig,
                            f"init_feedetl_sn: refunds {_num_py(q)} units of {orig} but only {_num_py(max(left - before, Decimal(0)))} is left",
                        )
                    )
                else:
                    taken[orig] = before + q
            if rows:
                con.register(
                    "__over",
                    pa.table(
                        {
                            "row_no": pa.array([r[0] for r in rows], pa.int32()),
                            "value": [r[1] for r in rows],
                            "reason": [r[2] for r in rows],
                        }
                    ),
                )
                try:
                    self.reject(c, "SELECT row_no, 'init_feedetl_sn' AS column_name, value, reason FROM __over")
                finally:
                    con.unregister("__over")
            for t in ("__known", "__j", "__ref"):
                con.execute(f"DROP TABLE {t}")
        # unlinked refunds: a line of the same visit, code and day must exist
        self.reject(
            c,
            f"""
            WITH u AS (SELECT {ROW}, mdtrt_id, hilist_code, cnt, CAST(fee_ocur_time AS DATE) AS day FROM {good}
                       WHERE cnt < 0 AND init_feedetl_sn IS NULL),
                 w AS (SELECT DISTINCT mdtrt_id, hilist_code, day FROM u),
                 found AS (SELECT DISTINCT f.mdtrt_id, f.hilist_code, CAST(f.fee_ocur_time AS DATE) AS day
                           FROM fee_list_d f JOIN w ON f.mdtrt_id = w.mdtrt_id AND f.hilist_code = w.hilist_code
                           AND CAST(f.fee_ocur_time AS DATE) = w.day WHERE f.cnt > 0
                           UNION
                           SELECT g.mdtrt_id, g.hilist_code, CAST(g.fee_ocur_time AS DATE) FROM {good} g
                           SEMI JOIN w ON g.mdtrt_id = w.mdtrt_id AND g.hilist_code = w.hilist_code
                           AND CAST(g.fee_ocur_time AS DATE) = w.day WHERE g.cnt > 0)
            SELECT u.{ROW} AS row_no, 'cnt' AS column_name, {_num("u.cnt")} AS value,
                   'cnt: ' || {_num("u.cnt")} || ' refunds nothing: visit ' || u.mdtrt_id || ' has no line of code '
                   || u.hilist_code || ' on ' || strftime(u.day, '%Y-%m-%d') AS reason
            FROM u ANTI JOIN found USING (mdtrt_id, hilist_code, day)""",
        )

    def check_amounts(self, c: _Checked) -> None:
        """A line whose amount is not cnt x pric (within 0.01) loads, and is listed in data_quality."""
        self.note(
            c,
            f"""SELECT {ROW}, bkkp_sn, 'det_item_fee_sumamt', {_num("det_item_fee_sumamt")},
            'det_item_fee_sumamt: ' || {_num("det_item_fee_sumamt")} || ' differs from cnt × pric = ' || {_num("cnt")}
            || ' × ' || {_num("pric")} || ' = ' || {_num("cnt * pric")}
            FROM {c.good} WHERE abs(det_item_fee_sumamt - cnt * pric) > 0.01""",
        )


# ---------------------------------------------------------------------------- loading


#: the order a table's rows are stored in, within a batch (the others: the file's). Fee lines by
#: month, then person: a screen in parts reads one range of persons at a time
#: (:func:`medaudit.engine.person_part`), and DuckDB skips the row groups whose min and max are
#: outside it; in an extract's own order (by visit, by time) every part would read every fee
#: line (52.4M lines in 5 parts: 2.0 CPU s a part for 7 columns, against 0.6 stored so). The
#: month first keeps a batch of several months in time order for a night's run, which reads from
#: its first day on (not measured). The sort, measured on a copy of the 10.48M lines' table with
#: and without it: 4.3 CPU s more in the generator's order, 7.2 from a shuffled one (the load
#: benchmark, on different nights: 65.1 -> 87.0 CPU s).
CLUSTER = {"fee_list_d": f"date_trunc('month', fee_ocur_time), psn_no, {ROW}"}


def _insert(con: duckdb.DuckDBPyConnection, c: _Checked, batch_id: int) -> None:
    """Insert the rows that passed (in the order :data:`CLUSTER` gives the table); only contract
    names reach the SQL text, values are bound."""
    names = ", ".join(db.ident(x) for x in c.table.column_names)
    order = f" ORDER BY {CLUSTER[c.table.name]}" if c.table.name in CLUSTER else ""
    con.execute(
        f"INSERT INTO {db.ident(c.table.name)} (batch_id, source_row, {names}) SELECT ?, {ROW}, {names} FROM {c.good}{order}",
        [batch_id],
    )


def _assert_required_present(con: duckdb.DuckDBPyConnection, checked: list[_Checked], batch_id: int) -> None:
    """Checked, not assumed: no required column of a row this load wrote is NULL (every table
    in one query)."""
    req = [(c, [col.name for col in c.table.columns if col.required]) for c in checked]
    req = [(c, names) for c, names in req if names]
    if not req:
        return
    per_table = ", ".join(
        "(SELECT [" + ", ".join(f"count(*) FILTER (WHERE {db.ident(n)} IS NULL)" for n in names) + "] "
        f"FROM {db.ident(c.table.name)} WHERE batch_id = $b)"
        for c, names in req
    )
    got = con.execute(f"SELECT {per_table}", {"b": batch_id}).fetchall()[0]
    for (c, names), counts in zip(req, got):
        for n, k in zip(names, counts):
            if not k:
                continue
            raise LoadError(
                f"{c.path}: {k} row(s) would load with the required column {n} empty; "
                "the load was undone (a loader bug: please report it with the file)"
            )


def load_batch(batch_dir: str | Path, con: duckdb.DuckDBPyConnection) -> LoadResult:
    """Load one batch folder into an open database. See the module doc for the guarantees."""
    batch_dir = Path(batch_dir)
    files = find_table_files(batch_dir)
    with tempfile.TemporaryDirectory(prefix="medaudit-load-") as tmp:
        sources = {name: _open_source(TABLES[name], path, Path(tmp)) for name, path in files.items()}  # may raise
        digest = content_hash(files, {s.path: s.digest for s in sources.values()})
        con.execute("BEGIN TRANSACTION")
        try:
            result = _load(con, batch_dir, sources, digest, Path(tmp))
            if result.already_loaded:
                con.execute("ROLLBACK")
            else:
                _drop_temp(con)
                con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return result


def _drop_temp(con: duckdb.DuckDBPyConnection) -> None:
    """The load's temp views and tables go before the commit (the connection may live on)."""
    mine = (
        "starts_with(name, '__s_') OR starts_with(name, '__g_') OR starts_with(name, '__rk_') "
        "OR starts_with(name, '__r_') OR starts_with(name, '__m_') OR starts_with(name, '__rg_') OR name IN ('__problems', '__quality', '__new')"
    )
    for (name,) in con.execute(
        f"SELECT view_name AS name FROM duckdb_views() WHERE temporary AND ({mine}) ORDER BY 1"
    ).fetchall():
        con.execute(f"DROP VIEW temp.main.{db.ident(name)}")
    for (name,) in con.execute(
        f"SELECT table_name AS name FROM duckdb_tables() WHERE temporary AND ({mine})"
    ).fetchall():
        con.execute(f"DROP TABLE temp.main.{db.ident(name)}")
    # a stage too big for memory, written to the database file (_stage_in_file): only the
    # stages of contract tables, the names this load made (never committed, so never older)
    for (name,) in con.execute(
        """SELECT table_name FROM duckdb_tables() WHERE NOT temporary AND database_name = current_database()
           AND schema_name = 'main' AND list_contains($stages, table_name)""",
        {"stages": ["__s_" + t for t in TABLES]},
    ).fetchall():
        con.execute(f"DROP TABLE main.{db.ident(name)}")


def _stage(con: duckdb.DuckDBPyConnection, src: _Source, tmp: Path) -> _Staged:
    if src.fmt == "csv":
        st = _stage_csv(con, src, tmp)
    elif src.fmt == "parquet":
        st = _stage_parquet(con, src)
    else:
        st = _stage_xlsx(con, src)
    _normalise(con, st)
    return st


def _load(
    con: duckdb.DuckDBPyConnection, batch_dir: Path, sources: dict[str, _Source], digest: str, tmp: Path
) -> LoadResult:
    """Everything that touches the database; the caller wraps it in one transaction."""
    db.ensure_schema(con, once=True)  # a connection from db.connect has it already
    prior = con.execute("SELECT batch_id FROM load_log WHERE content_hash = ?", [digest]).fetchall()
    if prior:
        return LoadResult(prior[0][0], digest, True)
    batch_id = con.execute("SELECT coalesce(max(batch_id), 0) + 1 FROM load_log").fetchall()[0][0]

    staged = {name: _stage(con, src, tmp) for name, src in sources.items()}  # may raise: unreadable
    chk = _Checker(con)
    checked: list[_Checked] = []
    parent_rejected: dict[str, tuple[str, str]] = {}
    for name in LOAD_ORDER:
        if name not in staged:
            continue
        c = chk.check_table(staged[name], parent_rejected)
        if name == "mdtrt_d":  # the parent of every claim table: earlier batches plus this one
            parent_rejected[name] = (chk.rejected_keys(c, _stage_name(c.table)), c.path.name)
        if name in ("setl_d", "fee_list_d"):
            chk.check_against_visit(c, fee=name == "fee_list_d")
        if name == "fee_list_d":
            chk.check_refunds(c)
            chk.check_amounts(c)
        checked.append(c)
    if checked:  # rows that load (every table in one query) and rows listed in data_quality
        counts = con.execute("SELECT " + ", ".join(f"(SELECT count(*) FROM {c.good})" for c in checked)).fetchall()[0]
        noted = dict(con.execute(f"SELECT table_name, count(*) FROM {_QUALITY} GROUP BY 1").fetchall())
        for c, n in zip(checked, counts):
            c.loaded = n
            c.quality = noted.get(c.table.name, 0)

    summaries = [
        TableSummary(c.table.name, c.path.name, c.read, c.loaded, c.read - c.loaded, c.normalised, c.ignored, c.quality)
        for c in checked
    ]
    for c in checked:
        _insert(con, c, batch_id)
    _assert_required_present(con, checked, batch_id)
    order = "ORDER BY file, row_no, column_name, reason"
    con.execute(
        f"INSERT INTO rejected_rows SELECT ?, file, table_name, row_no, column_name, value, reason FROM {_PROBLEMS} {order}",
        [batch_id],
    )
    con.execute(
        f"INSERT INTO data_quality SELECT ?, file, table_name, row_no, row_key, column_name, value, reason FROM {_QUALITY} {order}",
        [batch_id],
    )
    rejected = con.sql(f"SELECT file, table_name, row_no, column_name, value, reason FROM {_PROBLEMS} {order}").pl()
    quality = con.sql(
        f"SELECT file, table_name, row_no, row_key, column_name, value, reason FROM {_QUALITY} {order}"
    ).pl()
    con.execute(
        "INSERT INTO load_log VALUES (?, ?, ?, now()::TIMESTAMP, ?)",
        [batch_id, digest, str(batch_dir.resolve()), json.dumps([s.__dict__ for s in summaries], ensure_ascii=False)],
    )
    return LoadResult(batch_id, digest, False, summaries, rejected, quality)
