"""Split one batch into the day-by-day batches a bureau receives (for nightly-run tests and benchmarks).

Each row goes to the batch of the day it would arrive: a visit on its admission day; a fee line
on its fee day (never before its visit; a refund never before the line it refunds); a
settlement on its settlement day; diagnoses and procedures with the visit's settlement; a
death on the death date; a month's purchase records at the month's end; the catalogue first.
``late_share`` of the visits (chosen with ``seed``) arrive ``late_days`` later, all their rows
together, as late submissions do. Batches are cut at the given days: batch k holds the rows
arriving on or after ``cuts[k-1]`` and before ``cuts[k]`` (the first batch everything before
``cuts[0]``, the last everything from the last cut on).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

_DAY = pl.Date


def _day(col: str) -> pl.Expr:
    return pl.col(col).str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)


def _read(src: Path, name: str) -> pl.DataFrame | None:
    """A table of the batch as text (CSV or Parquet, as the generator writes them)."""
    p = src / f"{name}.csv"
    if p.exists():
        return pl.read_csv(p, infer_schema=False)
    p = src / f"{name}.parquet"
    return pl.read_parquet(p).cast(pl.Utf8) if p.exists() else None


def split_batch(
    src: Path,
    out: Path,
    cuts: list[dt.date],
    late_share: float = 0.0,
    late_days: int = 10,
    seed: int = 0,
    fmt: str = "csv",
) -> list[Path]:
    """Write ``len(cuts) + 1`` batch folders ``out/day_00`` ... (``fmt`` csv or parquet) and
    return them (empty ones included)."""
    src, out = Path(src), Path(out)
    visits = _read(src, "mdtrt_d")
    if visits is None:
        raise FileNotFoundError(f"{src}: no mdtrt_d.csv or mdtrt_d.parquet")
    import random

    rng = random.Random(seed)
    late = {v for v in visits["mdtrt_id"].to_list() if rng.random() < late_share}
    delay = pl.when(pl.col("mdtrt_id").is_in(list(late))).then(late_days).otherwise(0)
    visits = visits.with_columns(__arrive=_day("begntime") + pl.duration(days=delay))
    vday = visits.select("mdtrt_id", pl.col("__arrive").alias("__vday"))

    tables: dict[str, pl.DataFrame] = {"mdtrt_d": visits}
    fees = _read(src, "fee_list_d")
    if fees is not None:
        fees = fees.join(vday, on="mdtrt_id", how="left").with_columns(
            __arrive=pl.max_horizontal(_day("fee_ocur_time") + pl.duration(days=delay), pl.col("__vday"))
        )
        orig = fees.select(pl.col("bkkp_sn").alias("init_feedetl_sn"), pl.col("__arrive").alias("__oday"))
        fees = (
            fees.join(orig, on="init_feedetl_sn", how="left")
            .with_columns(__arrive=pl.max_horizontal("__arrive", "__oday"))
            .drop("__vday", "__oday")
        )
        tables["fee_list_d"] = fees
    setl = _read(src, "setl_d")
    if setl is not None:
        setl = (
            setl.join(vday, on="mdtrt_id", how="left")
            .with_columns(__arrive=pl.max_horizontal(_day("setl_time") + pl.duration(days=delay), pl.col("__vday")))
            .drop("__vday")
        )
        tables["setl_d"] = setl
        sday = setl.group_by("mdtrt_id").agg(pl.col("__arrive").max().alias("__sday"))
    for name in ("setl_list_diag_d", "setl_list_oprn_d"):
        t = _read(src, name)
        if t is not None:
            t = t.join(vday, on="mdtrt_id", how="left")
            if setl is not None:
                t = t.join(sday, on="mdtrt_id", how="left")
                t = t.with_columns(__arrive=pl.coalesce("__sday", "__vday")).drop("__sday")
            else:
                t = t.with_columns(__arrive=pl.col("__vday"))
            tables[name] = t.drop("__vday")
    death = _read(src, "psn_death")
    if death is not None:
        tables["psn_death"] = death.with_columns(__arrive=_day("die_date"))
    purchases = _read(src, "purchases")
    if purchases is not None:
        tables["purchases"] = purchases.with_columns(
            __arrive=(pl.col("period") + "-01").str.to_date("%Y-%m-%d").dt.month_end()
        )
    hilist = _read(src, "hilist")
    if hilist is not None:
        tables["hilist"] = hilist.with_columns(__arrive=pl.lit(dt.date.min, dtype=_DAY))

    bounds = [dt.date.min, *sorted(cuts), dt.date.max]
    folders = []
    for k in range(len(bounds) - 1):
        folder = out / f"day_{k:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, t in tables.items():
            part = t.filter(
                (pl.col("__arrive").fill_null(dt.date.min) >= bounds[k])
                & (pl.col("__arrive").fill_null(dt.date.min) < bounds[k + 1])
            )
            if part.height:
                part = part.drop("__arrive")
                if fmt == "parquet":
                    part.write_parquet(folder / f"{name}.parquet")
                else:
                    part.write_csv(folder / f"{name}.csv")
        folders.append(folder)
    return folders
