"""Put a sample batch together: clean data, injected violations, derived tables, files."""

from __future__ import annotations

import datetime as dt
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable

import numpy as np
import polars as pl

from . import catalog as cat
from .clean import LINE_SCHEMA, MONTH, CleanData, generate_clean, merge_lines, month_text
from .inject import KEY_COLUMNS, Batch, Context, Injector, Tables, seed_for
from .injectors import discover

if TYPE_CHECKING:
    import pyarrow.parquet as pq  # imported where a Parquet file is written

#: lines per visit on average (measured); used to turn a line count into a visit count
LINES_PER_VISIT = 19.4


@dataclass
class Generated:
    out: Path
    tables: dict[str, int]  # rows written per file
    key_rows: int
    by_type: dict[str, int] = field(default_factory=dict)  # answer-key rows per rule type
    seconds: float = 0.0
    #: a batch made in parts: each part's visits as the first and last number of their mdtrt_id
    #: (MD2026 and eight digits; the visits injectors added included); one piece: empty
    parts: list[tuple[int, int]] = field(default_factory=list)


def _fen(col: str) -> pl.Expr:
    """An integer amount in fen as a decimal string: -1234 -> '-12.34' (null stays null).

    Through an exact decimal (fen x 0.01 has no rounding) and its text; 2.5 times faster than
    building the text from quotient and remainder, the same text (tests/test_sample_generate.py)."""
    return (
        (pl.col(col).cast(pl.Decimal(38, 2)) * pl.lit(0.01).cast(pl.Decimal(38, 2)))
        .cast(pl.Decimal(38, 2))
        .cast(pl.Utf8)
    )


def _ts(col: str) -> pl.Expr:
    return pl.col(col).dt.strftime("%Y-%m-%d %H:%M:%S")


#: the catalogue's items with their prices in fen at levels 1-3
ITEMS_FRAME = pl.DataFrame(
    {
        "code": [i.code for i in cat.ITEMS],
        "hilist_name": [i.name for i in cat.ITEMS],
        "list_type": [i.list_type for i in cat.ITEMS],
        "med_chrgitm_type": [i.chrg for i in cat.ITEMS],
        "chrgitm_lv": [i.lv for i in cat.ITEMS],
        "p1": [i.price_at(1) for i in cat.ITEMS],
        "p2": [i.price_at(2) for i in cat.ITEMS],
        "p3": [i.price_at(3) for i in cat.ITEMS],
    }
)

#: fee lines turned into text (and joined with their visits) this many at a time
CHUNK_LINES = 500_000


class FeeLines:
    """``fee_list_d`` of a batch, made a chunk of lines at a time and never held whole: at 10M
    lines its text columns alone take several GB. ``height`` is its row count; :meth:`chunks`
    gives its rows in order as text frames, :meth:`joined` the internal lines joined with their
    visits and items (amounts in fen)."""

    def __init__(self, lines: pl.DataFrame, visits: pl.DataFrame, items: pl.DataFrame, chunk: int | None = None):
        self.lines = lines
        self.visits = visits.select(
            "vi",
            "mdtrt_id",
            "setl_id",
            "settled",
            "psn_no",
            "fixmedins_code",
            "level",
            "dept",
            "doctor",
            "insutype",
            "inpatient",
        )
        self.items = items
        self.chunk = chunk or CHUNK_LINES

    @property
    def height(self) -> int:
        return self.lines.height

    def joined(self):
        for off in range(0, self.lines.height, self.chunk):
            yield (
                self.lines.slice(off, self.chunk)
                .join(self.visits, on="vi", how="left", maintain_order="left")
                .join(self.items, on="code", how="left", maintain_order="left")
                .with_columns(
                    cap=pl.when(pl.col("level") >= 3).then("p3").when(pl.col("level") == 2).then("p2").otherwise("p1"),
                )
                .with_columns(pric=pl.coalesce("pric", "cap"))
                .with_columns(amt=pl.coalesce("billed", pl.col("cnt") * pl.col("pric")))
                .with_columns(own=(pl.col("amt") * pl.col("ownpay_pct")) // 100)
            )

    def chunks(self):
        for f in self.joined():
            yield (
                f.select(
                    "bkkp_sn",
                    "mdtrt_id",
                    # a stay not settled yet has no settlement on its lines (in-process extracts look like that)
                    pl.when(pl.col("settled")).then(pl.col("setl_id")).otherwise(None).alias("setl_id"),
                    "psn_no",
                    "fixmedins_code",
                    _ts("time").alias("fee_ocur_time"),
                    pl.col("code").alias("hilist_code"),
                    "hilist_name",
                    pl.format("{}{}", pl.col("fixmedins_code").str.slice(-4), pl.col("code").str.slice(-8)).alias(
                        "medins_list_codg"
                    ),
                    pl.col("hilist_name").alias("medins_list_name"),
                    "list_type",
                    "med_chrgitm_type",
                    "chrgitm_lv",
                    pl.col("cnt").cast(pl.Utf8).alias("cnt"),
                    _fen("pric").alias("pric"),
                    _fen("amt").alias("det_item_fee_sumamt"),
                    _fen("cap").alias("pric_uplmt_amt"),
                    _fen("own").alias("fulamt_ownpay_amt"),
                    (pl.col("amt") - pl.col("own")).alias("__inscp"),
                    pl.col("dept").alias("bilg_dept_codg"),
                    pl.col("doctor").alias("bilg_dr_code"),
                    pl.col("appr").alias("hosp_appr_flag"),
                    pl.col("dscg").alias("dscg_tkdrug_flag"),
                    pl.col("prd_days").cast(pl.Utf8).alias("prd_days"),
                    pl.col("init").alias("init_feedetl_sn"),
                )
                .with_columns(_fen("__inscp").alias("inscp_amt"))
                .drop("__inscp")
            )

    def collect(self) -> pl.DataFrame:
        """The whole table in memory (small batches, tests)."""
        return pl.concat(list(self.chunks()))


def build(
    visits: int, seed: int, types: list[str] | None = None, on_fee: Callable[[FeeLines], None] | None = None
) -> tuple[dict[str, pl.DataFrame | FeeLines], pl.DataFrame]:
    """Generate the tables (national columns, all text) and the answer key, in memory.

    ``on_fee(fee)`` is called with ``fee_list_d`` (a :class:`FeeLines`) as soon as it is final,
    before the injectors' finish steps (which never change it): :func:`generate` starts writing it
    then, on the other core, while the finish steps run."""
    injectors = discover()
    ctx = _injected(generate_clean(visits, seed), seed, types, injectors)
    tables = assemble(ctx)
    if on_fee is not None:
        on_fee(_fee(tables))
    frames = _frames(tables)
    for name, inj in injectors.items():
        if inj.finish and (types is None or name in types):
            ctx.current_type, ctx.current_rate = name, inj.rate
            ctx.rng = np.random.default_rng(seed_for(seed, name + ":finish"))
            inj.finish(ctx, frames)
    tables.update(frames)  # the tables the finish steps changed or added
    return tables, _key_frame([_key_rows(ctx.key)])


def _fee(tables: dict[str, pl.DataFrame | FeeLines]) -> FeeLines:
    """The tables' fee_list_d (assemble makes it a FeeLines)."""
    fee = tables["fee_list_d"]
    if not isinstance(fee, FeeLines):
        raise TypeError(f"fee_list_d is made a chunk at a time (FeeLines), got {type(fee).__name__}")
    return fee


def _frames(tables: dict[str, pl.DataFrame | FeeLines]) -> Tables:
    """The tables held whole as frames: all but fee_list_d (what the finish steps read)."""
    return {t: df for t, df in tables.items() if isinstance(df, pl.DataFrame)}


def _injected(
    data: CleanData, seed: int, types: list[str] | None, injectors: dict[str, Injector], first: bool = True
) -> Context:
    """The clean data with every injector's violations (``first``: the first part of a batch, or
    the whole batch; an injector that injects ``once`` runs there only)."""
    ctx = Context(data)
    for name, inj in injectors.items():
        if types is not None and name not in types:
            continue
        if inj.once and not first:
            continue
        ctx.current_type, ctx.current_rate = name, inj.rate
        ctx.rng = np.random.default_rng(seed_for(seed, name))
        inj.inject(ctx)
    return ctx


def _key_rows(rows: list[dict]) -> pl.DataFrame:
    schema = {c: pl.Utf8 for c in KEY_COLUMNS}
    return pl.DataFrame(rows, schema=schema) if rows else pl.DataFrame(schema=schema)


def _key_frame(parts: list[pl.DataFrame]) -> pl.DataFrame:
    """The answer key: the rows in order of writing, the first of each (type, rule, visit, line), sorted."""
    key = pl.concat(parts) if len(parts) > 1 else parts[0]
    return key.unique(subset=["rule_type", "rule_id", "mdtrt_id", "bkkp_sn"], keep="first", maintain_order=True).sort(
        "rule_type", "rule_id", "mdtrt_id", "bkkp_sn", nulls_last=True
    )


def assemble(ctx: Context) -> dict[str, pl.DataFrame | FeeLines]:
    """Clean data + the injectors' changes -> the batch tables with national columns (text);
    ``fee_list_d`` a :class:`FeeLines`, made a chunk at a time when it is written."""
    data = ctx.data
    lines = data.lines
    # the clean lines are not read after this (ctx.lines_of is for injectors): let each step
    # below free the previous copy, and the added lines' dicts once they are a frame
    del data.lines
    ctx._lines = None
    extra = pl.DataFrame(ctx.new_lines, schema=LINE_SCHEMA)
    ctx.new_lines.clear()
    if ctx.line_edits:  # one join for the edited lines; a field an edit names is set, None included
        cols = sorted({c for ch in ctx.line_edits.values() for c in ch})
        rows = [
            {"bkkp_sn": k, **{f"{c}__new": ch.get(c) for c in cols}, **{f"{c}__set": c in ch for c in cols}}
            for k, ch in ctx.line_edits.items()
        ]
        schema: dict[str, pl.DataType | type[pl.DataType]] = {
            "bkkp_sn": pl.Utf8,
            **{f"{c}__new": LINE_SCHEMA[c] for c in cols},
            **{f"{c}__set": pl.Boolean for c in cols},
        }
        ed = pl.DataFrame(rows, schema=schema)
        # an edit may move a line (its time): edited clean lines are placed again like added ones
        # (and an injector may edit a line it added)
        hit = pl.col("bkkp_sn").is_in(ed["bkkp_sn"].implode())
        extra = pl.concat([extra, lines.filter(hit)])
        lines = lines.filter(~hit)
        extra = (
            extra.join(ed, on="bkkp_sn", how="left", maintain_order="left")
            .with_columns(
                [
                    pl.when(pl.col(f"{c}__set").fill_null(False))
                    .then(pl.col(f"{c}__new"))
                    .otherwise(pl.col(c))
                    .alias(c)
                    for c in cols
                ]
            )
            .select(list(LINE_SCHEMA))
        )
    lines = merge_lines(lines, extra)
    del extra
    v = data.visits
    diag_rows = data.diag
    if ctx.new_visits:  # visits the injectors added (Context.add_visit), with their diagnoses
        nv = pl.DataFrame(ctx.new_visits, schema=v.schema)
        v = pl.concat([v, nv])
        diag_rows = pl.concat(
            [
                diag_rows,
                nv.select("mdtrt_id", pl.col("main_diag").alias("diag_code"), pl.lit("1").alias("maindiag_flag")),
                nv.filter(pl.col("second_diag").is_not_null()).select(
                    "mdtrt_id", pl.col("second_diag").alias("diag_code"), pl.lit("0").alias("maindiag_flag")
                ),
            ]
        )
    items = ITEMS_FRAME
    fee = FeeLines(lines, v, items)
    # one pass over the lines, a chunk at a time: the settlements' totals, what was billed of
    # each drug and consumable a month, and every line's amount (for finish: ctx.fee_lines)
    sums_parts, billed_parts, amounts = [], [], []
    for f in fee.joined():
        sums_parts.append(f.group_by("vi").agg(pl.col("amt").sum().alias("tot"), pl.col("own").sum().alias("own")))
        billed_parts.append(
            f.filter(pl.col("list_type").is_in(["101", "301"]))
            .group_by("fixmedins_code", "code", MONTH.alias("month"))
            .agg(pl.col("cnt").sum().alias("q"))
        )
        amounts.append(f.select("amt", "own"))
    ctx.fee_lines = (
        pl.concat([lines, pl.concat(amounts)], how="horizontal")
        if amounts
        else lines.with_columns(amt=pl.lit(None, pl.Int64), own=pl.lit(None, pl.Int64))
    )
    ctx.all_visits = v
    del amounts

    # settlements: totals of the visit's lines
    sums = (
        pl.concat(sums_parts).group_by("vi").agg(pl.col("tot").sum(), pl.col("own").sum())
        if sums_parts
        else pl.DataFrame(schema={"vi": pl.Int64, "tot": pl.Int64, "own": pl.Int64})
    )
    rate = (
        pl.when(pl.col("insutype") == "410")
        .then(100)
        .when(pl.col("insutype") == "340")
        .then(95)
        .when(pl.col("inpatient"))
        .then(pl.when(pl.col("insutype") == "310").then(85).otherwise(70))
        .otherwise(pl.when(pl.col("insutype") == "310").then(60).otherwise(50))
    )
    setl = (
        v.filter(pl.col("settled"))
        .join(sums, on="vi", how="left", maintain_order="left")
        .with_columns(pl.col("tot").fill_null(0), pl.col("own").fill_null(0))
        .with_columns(inscp=pl.col("tot") - pl.col("own"))
        .with_columns(fund=(pl.col("inscp") * rate) // 100)
        .select(
            "setl_id",
            "mdtrt_id",
            "psn_no",
            "fixmedins_code",
            _ts("endtime").alias("setl_time"),
            _fen("tot").alias("medfee_sumamt"),
            _fen("fund").alias("fund_pay_sumamt"),
            _fen("fund").alias("hifp_pay"),
            _fen("own").alias("fulamt_ownpay_amt"),
            _fen("inscp").alias("inscp_amt"),
            pl.when(pl.col("refunded")).then(pl.lit("1")).otherwise(pl.lit("0")).alias("refd_setl_flag"),
        )
    )

    mdtrt = v.with_columns(
        dscg_way=pl.when(pl.col("died")).then(pl.lit("5")).when(pl.col("inpatient")).then(pl.lit("1")).otherwise(None),
        die_date=pl.when(pl.col("died")).then(pl.col("endtime").dt.date()).otherwise(None),
    )
    if ctx.visit_edits:
        ed = pl.DataFrame([{"mdtrt_id": k, **e} for k, e in ctx.visit_edits.items()], infer_schema_length=None)
        for c in ed.columns:
            if c == "mdtrt_id":
                continue
            e = ed.select("mdtrt_id", pl.col(c).alias("__new")).filter(pl.col("__new").is_not_null())
            mdtrt = (
                mdtrt.join(e, on="mdtrt_id", how="left")
                .with_columns(pl.coalesce(pl.col("__new").cast(mdtrt.schema[c]), pl.col(c)).alias(c))
                .drop("__new")
            )
    mdtrt = mdtrt.select(
        "mdtrt_id",
        "psn_no",
        "psn_name",
        "gend",
        pl.col("brdy").dt.strftime("%Y-%m-%d"),
        "insutype",
        "fixmedins_code",
        "fixmedins_name",
        "hosp_lv",
        "med_type",
        _ts("begntime"),
        _ts("endtime"),
        pl.when(pl.col("inpatient")).then(pl.col("main_diag")).otherwise(None).alias("dscg_maindiag_code"),
        pl.col("dept").alias("adm_dept_codg"),
        pl.when(pl.col("inpatient")).then(pl.col("dept")).otherwise(None).alias("dscg_dept_codg"),
        pl.col("doctor").alias("chfpdr_code"),
        "dscg_way",
        pl.col("die_date").dt.strftime("%Y-%m-%d"),
        pl.col("ipt_days").cast(pl.Utf8),
    )
    names = {c: n for c, (n, _d) in cat.DIAG.items()}
    diag = diag_rows.join(v.select("mdtrt_id", "setl_id", "settled"), on="mdtrt_id").select(
        "mdtrt_id",
        pl.when(pl.col("settled")).then(pl.col("setl_id")).otherwise(None).alias("setl_id"),
        pl.lit("1").alias("diag_type"),
        "maindiag_flag",
        "diag_code",
        pl.col("diag_code").replace_strict(names, default=None).alias("diag_name"),
    )
    oprn = data.oprn.with_columns(_ts("oprn_oprt_date"))
    tables: dict[str, pl.DataFrame | FeeLines] = {
        "mdtrt_d": mdtrt,
        "setl_d": setl,
        "fee_list_d": fee,
        "setl_list_diag_d": diag,
        "setl_list_oprn_d": oprn,
    }

    # knowledge tables: the catalogue (caps = clean prices), purchases covering what was billed
    billed = (
        pl.concat(billed_parts)
        .group_by("fixmedins_code", "code", "month")
        .agg(pl.col("q").sum())
        .with_columns(month_text("month").alias("period"))
        if billed_parts
        else pl.DataFrame(schema={"fixmedins_code": pl.Utf8, "code": pl.Utf8, "period": pl.Utf8, "q": pl.Int64})
    )
    ctx.billed = billed.select("fixmedins_code", "code", "period", "q")
    tables["hilist"] = _hilist()
    tables["purchases"] = _purchases(billed)
    deaths = ctx.rows.get("psn_death", [])
    tables["psn_death"] = pl.DataFrame(
        {"psn_no": [d["psn_no"] for d in deaths], "die_date": [str(d["die_date"]) for d in deaths]},
        schema={"psn_no": pl.Utf8, "die_date": pl.Utf8},
    )
    for t, rows in ctx.rows.items():
        if t == "psn_death" or not rows:
            continue
        extra = pl.DataFrame(
            [{k: (None if x is None else str(x)) for k, x in r.items()} for r in rows], infer_schema_length=None
        )
        prev = tables.get(t)
        if isinstance(prev, FeeLines):
            raise ValueError("fee lines are added with ctx.add_line, not ctx.add_row")
        tables[t] = pl.concat([prev, extra], how="diagonal_relaxed") if prev is not None else extra
    return tables


def _hilist() -> pl.DataFrame:
    """The catalogue: every item, its clean prices as caps, in force all year."""
    return ITEMS_FRAME.select(
        pl.col("code").alias("hilist_code"),
        "hilist_name",
        "list_type",
        "chrgitm_lv",
        _fen("p1").alias("lv1_pric"),
        _fen("p2").alias("lv2_pric"),
        _fen("p3").alias("lv3_pric"),
        pl.lit("2020-01-01").alias("begndate"),
        pl.lit("2099-12-31").alias("enddate"),
    )


def _purchases(billed: pl.DataFrame) -> pl.DataFrame:
    """Purchases covering what was billed (fixmedins_code, code, period, q): 120% of it, plus 10."""
    return billed.select(
        "fixmedins_code",
        pl.col("code").alias("hilist_code"),
        "period",
        ((pl.col("q") * 6) // 5 + 10).cast(pl.Utf8).alias("purchase_cnt"),
        pl.lit("0").alias("opening_stock_cnt"),
    ).sort("fixmedins_code", "hilist_code", "period")


def write(
    tables: dict[str, pl.DataFrame | FeeLines],
    key: pl.DataFrame,
    out: Path,
    fmt: str = "csv",
    fee_writer: FeeWriter | None = None,
) -> dict[str, int]:
    """Write every table (a :class:`FeeLines` a chunk at a time) and the key into ``out``.

    ``fee_writer``: ``fee_list_d`` is being written already (:class:`FeeWriter`, started by
    :func:`generate` while the finish steps ran); its file takes its name when it is done."""
    out.mkdir(parents=True, exist_ok=True)
    for t in tables:
        for suffix in (".csv", ".parquet", ".xlsx"):
            stale = out / f"{t}{suffix}"
            if stale.exists():
                stale.unlink()
    written = {}
    for t, df in tables.items():
        path = out / f"{t}.{'parquet' if fmt == 'parquet' else 'csv'}"
        if isinstance(df, FeeLines) and fee_writer is not None and fee_writer.fee is df:
            continue  # last: the other tables are written while it finishes
        if isinstance(df, FeeLines):
            _write_chunks(df, path, fmt)
        elif fmt == "parquet":
            df.write_parquet(path)
        else:
            df.write_csv(path)
        written[path.name] = df.height
    key.write_csv(out / "answer_key.csv")
    written["answer_key.csv"] = key.height
    if fee_writer is not None:
        fee_writer.finish()  # raises what the writer raised; renames its file into place
        written = {
            n: written.get(n, fee_writer.fee.height)
            for n in [f"{t}.{'parquet' if fmt == 'parquet' else 'csv'}" for t in tables] + ["answer_key.csv"]
        }
    return written


def _formatted(fee: FeeLines, stop: threading.Event | None = None, depth: int = 2):
    """``fee.chunks()`` made on another thread, at most ``depth`` chunks ahead: the next chunk's
    text is formatted (polars, without the GIL) while the caller encodes and writes this one
    (pyarrow or polars, also without the GIL), so both cores work and memory stays bounded."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    halt = threading.Event()  # the consumer is gone
    done = object()

    def put(item) -> bool:
        while not halt.is_set():  # never blocks after the consumer left
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for part in fee.chunks():
                if stop is not None and stop.is_set():
                    put(RuntimeError("fee_list_d writer was stopped"))
                    return
                if not put(part):
                    return
            put(done)
        except BaseException as e:  # handed to the consumer, raised there
            put(e)

    t = threading.Thread(target=produce, name="fee_list_d-format", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        halt.set()
        t.join()


def _write_chunks(fee: FeeLines, path: Path, fmt: str, stop: threading.Event | None = None) -> None:
    """One file from the chunks: CSV appended (the header once), Parquet a row group a chunk."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        writer = None
        try:
            for part in _formatted(fee, stop):
                table = part.to_arrow(compat_level=pl.CompatLevel.newest())
                if writer is None:
                    writer = pq.ParquetWriter(path, table.schema, compression="zstd")
                writer.write_table(table)
        finally:
            if writer is not None:
                writer.close()
        return
    with open(path, "wb") as fh:
        first = True
        for part in _formatted(fee, stop):
            part.write_csv(fh, include_header=first)
            first = False


class FeeWriter:
    """``fee_list_d`` written on a thread of its own, into ``<name>.part`` beside its final name:
    :meth:`finish` waits for it, raises what it raised and renames the file into place;
    :meth:`abandon` stops it and removes the part file (nothing half-written keeps the name)."""

    def __init__(self, fee: FeeLines, path: Path, fmt: str):
        self.fee, self.path, self.fmt = fee, path, fmt
        self.part = path.with_name(path.name + ".part")
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fee_list_d-write", daemon=True)

    def start(self) -> "FeeWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            _write_chunks(self.fee, self.part, self.fmt, self._stop)
        except BaseException as e:
            self.error = e

    def finish(self) -> None:
        self._thread.join()
        if self.error is not None:
            self.part.unlink(missing_ok=True)
            raise self.error
        if self._stop.is_set():
            self.part.unlink(missing_ok=True)
            raise RuntimeError("fee_list_d writer was stopped")
        os.replace(self.part, self.path)

    def abandon(self) -> None:
        self._stop.set()
        self._thread.join()
        self.part.unlink(missing_ok=True)


def generate(
    out: str | Path,
    visits: int | None = None,
    seed: int = 1,
    fmt: str = "csv",
    lines: int | None = None,
    types: list[str] | None = None,
    part_lines: int | None = None,
) -> Generated:
    """Write a sample batch folder with ``answer_key.csv``. Give ``visits``, or ``lines`` (approximate).

    ``part_lines``: make the batch in parts of about that many lines each (see :func:`parts`), so
    memory is bounded by a part, not the batch; a batch of at most that many lines is made in
    one piece, exactly as without it."""
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"format must be csv or parquet, got {fmt!r}")
    t0 = time.perf_counter()
    if visits is None:
        visits = max(1, int(round((lines or 20_000) / LINES_PER_VISIT)))
    out = Path(out)
    if part_lines is not None:
        sizes = parts(visits, part_lines)
        if len(sizes) > 1:
            written, key, ranges = _generate_in_parts(out, sizes, seed, fmt, types)
            by_type = dict(key.group_by("rule_type").len().sort("rule_type").iter_rows()) if key.height else {}
            return Generated(out, written, key.height, by_type, time.perf_counter() - t0, ranges)
    fee_writer: FeeWriter | None = None

    def start_fee(fee: FeeLines) -> None:
        nonlocal fee_writer
        fee_writer = FeeWriter(fee, out / f"fee_list_d.{'parquet' if fmt == 'parquet' else 'csv'}", fmt).start()

    try:
        tables, key = build(visits, seed, types, on_fee=start_fee)
        written = write(tables, key, out, fmt, fee_writer=fee_writer)
    except BaseException:
        if fee_writer is not None:
            fee_writer.abandon()
        raise
    by_type = dict(key.group_by("rule_type").len().sort("rule_type").iter_rows()) if key.height else {}
    return Generated(Path(out), written, key.height, by_type, time.perf_counter() - t0)


# ---------------------------------------------------------------------------- a batch in parts

#: tables made by each part and appended to the batch's file; hilist and purchases are the
#: batch's (the catalogue; what all parts billed), written once at the end
PART_TABLES = ("mdtrt_d", "setl_d", "fee_list_d", "setl_list_diag_d", "setl_list_oprn_d", "psn_death")


def parts(visits: int, part_lines: int) -> list[int]:
    """The visits of each part of a batch of ``visits`` made in parts of about ``part_lines``
    lines: as few parts as fit, of sizes differing by at most one visit.

    A batch made in parts: each part is generated like a batch of its own (clean data, injected
    violations, derived tables) from its own seed (the batch seed for part 0, then one derived
    from it and the part's number), with ids after those of the parts before it (mdtrt_id,
    setl_id, psn_no, bkkp_sn, and the visits injectors add), and is appended to the batch's
    files as soon as it is made. A person's visits are all in one part, so every violation
    across visits (readmission, overlapping stays, purchases a month...) stays inside a part and
    its key rows are right for the batch. What is judged against the whole batch is done once,
    at the end: purchases cover what all parts billed; inventory_mismatch and overtreatment
    gather each part's aggregates and decide over the batch (Injector.gather/combine);
    peer_outlier injects in part 0 only (Injector.once). Part 0 of a batch made in parts is the
    batch in one piece of its size and seed, as far as its own rows go."""
    per = max(1, int(round(part_lines / LINES_PER_VISIT)))
    k = max(1, -(-visits // per))
    return [visits // k + (1 if i < visits % k else 0) for i in range(k)]


def part_seed(seed: int, k: int) -> int:
    return seed if k == 0 else seed_for(seed, f"part:{k}")


class _Sink:
    """One table's file of a batch made in parts, written into ``<name>.part`` a part at a time
    (CSV appended, the header once; Parquet a row group per write, every column text) and
    renamed into place by :meth:`close`. Every part gives the first part's columns (a column
    only a later part has is an error, one it lacks is written empty)."""

    def __init__(self, path: Path, fmt: str):
        self.path, self.fmt = path, fmt
        self.part = path.with_name(path.name + ".part")
        self.columns: list[str] | None = None
        self.rows = 0
        self._fh: BinaryIO | None = None  # CSV
        self._pq: pq.ParquetWriter | None = None  # Parquet

    def write(self, df: pl.DataFrame) -> None:
        if self.columns is None:
            self.columns = df.columns
            if self.fmt != "parquet":
                self._fh = open(self.part, "wb")
        else:
            new = [c for c in df.columns if c not in self.columns]
            if new:
                raise ValueError(f"{self.path.name}: a later part has columns the first did not: {new}")
            if df.columns != self.columns:
                df = df.select([pl.col(c) if c in df.columns else pl.lit(None).alias(c) for c in self.columns])
        df = df.with_columns(pl.all().cast(pl.Utf8))
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            table = df.to_arrow(compat_level=pl.CompatLevel.newest())
            if self._pq is None:
                self._pq = pq.ParquetWriter(self.part, table.schema, compression="zstd")
            if df.height:
                self._pq.write_table(table)
        else:
            fh = self._fh
            assert fh is not None  # opened with the first part
            df.write_csv(fh, include_header=fh.tell() == 0)
        self.rows += df.height

    def close(self) -> None:
        if self._pq is not None:
            self._pq.close()
        if self._fh is not None:
            self._fh.close()
        os.replace(self.part, self.path)

    def abandon(self) -> None:
        for h in (self._pq, self._fh):
            try:
                if h is not None:
                    h.close()
            except Exception:  # noqa: BLE001  (removed below either way)
                pass
        self.part.unlink(missing_ok=True)


def _generate_in_parts(
    out: Path, sizes: list[int], seed: int, fmt: str, types: list[str] | None
) -> tuple[dict[str, int], pl.DataFrame, list[tuple[int, int]]]:
    """Make and write a batch in parts of ``sizes`` visits (see :func:`parts`); returns the rows
    written per file, the answer key and each part's range of visit numbers."""
    ext = "parquet" if fmt == "parquet" else "csv"
    out.mkdir(parents=True, exist_ok=True)
    names = [*PART_TABLES[:5], "hilist", "purchases", "psn_death"]
    for t in names:
        for suffix in (".csv", ".parquet", ".xlsx"):
            (out / f"{t}{suffix}").unlink(missing_ok=True)
    sinks = {t: _Sink(out / f"{t}.{ext}", fmt) for t in PART_TABLES}
    injectors = discover()
    chosen = {n: inj for n, inj in injectors.items() if types is None or n in types}
    # the finish steps that read the lines: gathered in each part, combined at the end
    gathers = {n: inj.gather for n, inj in chosen.items() if inj.finish and inj.gather}
    gathered: dict[str, list] = {n: [] for n in gathers}
    billed: list[pl.DataFrame] = []
    keys: list[pl.DataFrame] = []
    visit_base = person_base = line_base = 0
    ranges: list[tuple[int, int]] = []
    writing: _PartWriter | None = None
    try:
        for k, n in enumerate(sizes):
            s = part_seed(seed, k)
            data = generate_clean(n, s, visit_base, person_base, line_base, part=k)
            ctx = _injected(data, s, types, injectors, first=k == 0)
            ranges.append((visit_base + 1, visit_base + ctx.n_visits + len(ctx.new_visits)))
            visit_base = ranges[-1][1]
            person_base += data.persons
            del data
            tables = assemble(ctx)
            frames = _frames(tables)
            line_base = ctx._next - 1
            # fee_list_d formatted and written on threads of their own while the gathers run and
            # the next part is made (the previous part's is written by now: one part's in flight)
            if writing is not None:
                writing.finish()
            writing = _PartWriter(_fee(tables), sinks["fee_list_d"])
            for name, gather in gathers.items():
                ctx.current_type, ctx.current_rate = name, injectors[name].rate
                ctx.rng = np.random.default_rng(seed_for(s, name + ":finish"))
                gathered[name].append(gather(ctx, frames))
            for t in PART_TABLES:
                if t == "fee_list_d":
                    continue
                if t not in frames:
                    raise ValueError(f"part {k}: no table {t}")
                sinks[t].write(frames[t])
            extra = sorted(set(tables) - set(PART_TABLES) - {"hilist", "purchases"})
            if extra or ctx.rows.get("hilist") or ctx.rows.get("purchases"):
                raise ValueError(f"an injector added rows to {extra or ['hilist/purchases']}: not made in parts yet")
            assert ctx.billed is not None  # set by assemble
            billed.append(ctx.billed)
            keys.append(_key_rows(ctx.key))
            del ctx, tables, frames
        if writing is not None:
            writing.finish()
        total = sum(sizes)
        b = pl.concat(billed).group_by("fixmedins_code", "code", "period").agg(pl.col("q").sum())
        batch_tables = {"hilist": _hilist(), "purchases": _purchases(b)}
        batch = Batch(total)
        for name, inj in chosen.items():
            if not inj.finish:
                continue
            batch.current_type, batch.current_rate = name, inj.rate
            batch.rng = np.random.default_rng(seed_for(seed, name + ":finish"))
            if inj.combine is not None and name in gathered:  # (an injector gives gather and combine together)
                inj.combine(batch, gathered.pop(name), batch_tables)
            else:
                inj.finish(batch, batch_tables)
        key = _key_frame([*keys, _key_rows(batch.key)])
        for t, df in batch_tables.items():
            df.write_parquet(out / f"{t}.{ext}") if fmt == "parquet" else df.write_csv(out / f"{t}.{ext}")
        key.write_csv(out / "answer_key.csv")
        written = {}
        for t in names:  # the parts' files take their names last
            if t in sinks:
                sink = sinks.pop(t)
                sink.close()
                written[f"{t}.{ext}"] = sink.rows
            else:
                written[f"{t}.{ext}"] = batch_tables[t].height
        written["answer_key.csv"] = key.height
        return written, key, ranges
    except BaseException:
        if writing is not None:
            writing.abandon()
        for sink in sinks.values():
            sink.abandon()
        raise


class _PartWriter:
    """A part's fee_list_d appended to the batch's file on threads of its own (formatting one
    chunk while the previous one is written): :meth:`finish` waits and raises what it raised,
    :meth:`abandon` stops it."""

    def __init__(self, fee: FeeLines, sink: _Sink):
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(fee, sink), name="fee_list_d-part", daemon=True)
        self._thread.start()

    def _run(self, fee: FeeLines, sink: _Sink) -> None:
        try:
            for part in _formatted(fee, self._stop):
                sink.write(part)
        except BaseException as e:  # raised by finish
            self.error = e

    def finish(self) -> None:
        self._thread.join()
        if self.error is not None:
            raise self.error

    def abandon(self) -> None:
        self._stop.set()
        self._thread.join()


__all__ = ["generate", "build", "Generated", "parts", "dt"]
