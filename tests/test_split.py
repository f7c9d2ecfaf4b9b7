"""The day-by-day split of a batch (medaudit/sample/split.py), which the nightly tests and
benchmarks stand on: every row arrives exactly once, and never before what it depends on."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from medaudit.sample.split import split_batch

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_data" / "batch"
CUTS = [dt.date(2026, 1, 20) + dt.timedelta(days=20 * k) for k in range(11)]


def _rows(folders: list[Path], name: str, fmt: str = "csv") -> pl.DataFrame:
    """A table's rows over all folders, each with the index of the batch it arrived in."""
    parts = []
    for k, folder in enumerate(folders):
        f = folder / f"{name}.{fmt}"
        if f.exists():
            t = pl.read_csv(f, infer_schema=False) if fmt == "csv" else pl.read_parquet(f).cast(pl.Utf8)
            parts.append(t.with_columns(__batch=pl.lit(k)))
    return pl.concat(parts) if parts else pl.DataFrame()


@pytest.fixture(scope="module")
def days(tmp_path_factory) -> list[Path]:
    return split_batch(SAMPLE, tmp_path_factory.mktemp("split"), CUTS, late_share=0.15, late_days=20, seed=7)


def test_every_row_arrives_exactly_once(days):
    assert len(days) == len(CUTS) + 1
    for src in sorted(SAMPLE.glob("*.csv")):
        if src.stem == "answer_key":
            continue
        whole = pl.read_csv(src, infer_schema=False)
        got = _rows(days, src.stem)
        assert got.height == whole.height, src.stem
        assert sorted(got.drop("__batch").fill_null("").rows()) == sorted(whole.fill_null("").rows()), src.stem


def test_nothing_arrives_before_what_it_depends_on(days):
    visits = _rows(days, "mdtrt_d").select("mdtrt_id", vb="__batch")
    fees = _rows(days, "fee_list_d").join(visits, on="mdtrt_id", how="left")
    assert fees.filter(pl.col("__batch") < pl.col("vb")).height == 0, "a fee line before its visit"
    # a refund never before the line it refunds (the sample has refunds, some of them a batch later)
    orig = fees.select(pl.col("bkkp_sn").alias("init_feedetl_sn"), ob="__batch")
    refunds = fees.join(orig, on="init_feedetl_sn", how="inner")
    assert refunds.height > 0
    assert refunds.filter(pl.col("__batch") < pl.col("ob")).height == 0, "a refund before its line"
    # diagnoses with the visit's settlement
    setl = _rows(days, "setl_d").group_by("mdtrt_id").agg(sb=pl.col("__batch").max())
    diag = _rows(days, "setl_list_diag_d").join(setl, on="mdtrt_id", how="left").join(visits, on="mdtrt_id")
    assert diag.filter(pl.col("__batch") != pl.coalesce("sb", "vb")).height == 0
    # the catalogue first; a month's purchases at its end
    assert set(_rows(days, "hilist")["__batch"].to_list()) == {0}
    purchases = _rows(days, "purchases")
    ends = [dt.date.fromisoformat(p + "-01") for p in purchases["period"].to_list()]
    for end, k in zip(ends, purchases["__batch"].to_list()):
        month_end = (end.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)
        assert k == sum(1 for c in CUTS if c <= month_end)


def test_late_visits_arrive_late_with_all_their_rows(days):
    visits = _rows(days, "mdtrt_d")
    on_time = [sum(1 for c in CUTS if c <= dt.date.fromisoformat(b[:10])) for b in visits["begntime"].to_list()]
    late = visits.with_columns(on_time=pl.Series(on_time)).filter(pl.col("__batch") != pl.col("on_time"))
    # 15% drawn, 20 days late: some move to a later batch, none to an earlier one
    assert 0 < late.height < visits.height * 0.2
    assert late.filter(pl.col("__batch") < pl.col("on_time")).height == 0
    fees = _rows(days, "fee_list_d").join(late.select("mdtrt_id", "begntime"), on="mdtrt_id")
    assert fees.height > 0
    # each of their lines 20 days after its own day (or its visit's, if later)
    for fee_day, begin, k in fees.select("fee_ocur_time", "begntime", "__batch").iter_rows():
        due = max(dt.date.fromisoformat(fee_day[:10]), dt.date.fromisoformat(begin[:10])) + dt.timedelta(days=20)
        assert k == sum(1 for c in CUTS if c <= due), (fee_day, begin, k)


def test_a_refund_waits_for_the_line_it_refunds(tmp_path):
    """A refund dated before its line (the line's day moved 45 days on): it arrives with the line."""
    src = tmp_path / "batch"
    src.mkdir()
    for f in SAMPLE.glob("*.csv"):
        (src / f.name).write_bytes(f.read_bytes())
    fees = pl.read_csv(SAMPLE / "fee_list_d.csv", infer_schema=False)
    refund = fees.filter(pl.col("init_feedetl_sn").is_not_null()).row(0, named=True)
    later = (dt.datetime.fromisoformat(refund["fee_ocur_time"]) + dt.timedelta(days=45)).isoformat(sep=" ")
    fees = fees.with_columns(
        fee_ocur_time=pl.when(pl.col("bkkp_sn") == refund["init_feedetl_sn"])
        .then(pl.lit(later))
        .otherwise("fee_ocur_time")
    )
    fees.write_csv(src / "fee_list_d.csv")
    got = _rows(split_batch(src, tmp_path / "out", CUTS), "fee_list_d")
    batch = dict(got.select("bkkp_sn", "__batch").iter_rows())
    assert batch[refund["init_feedetl_sn"]] > sum(
        1 for c in CUTS if c <= dt.date.fromisoformat(refund["fee_ocur_time"][:10])
    )
    assert batch[refund["bkkp_sn"]] == batch[refund["init_feedetl_sn"]]


def test_parquet_and_only_what_comes_before_the_last_cut(days, tmp_path):
    """A benchmark's cut (Parquet, nothing after the night): the same rows in the same batches."""
    src = tmp_path / "pq"
    src.mkdir()
    for f in SAMPLE.glob("*.csv"):
        pl.read_csv(f, infer_schema=False).write_parquet(src / f"{f.stem}.parquet")
    cuts = CUTS[:3]
    got = split_batch(
        src, tmp_path / "out", cuts, late_share=0.15, late_days=20, seed=7, fmt="parquet", keep_last=False
    )
    assert len(got) == len(cuts)
    ref = split_batch(SAMPLE, tmp_path / "ref", cuts, late_share=0.15, late_days=20, seed=7)
    for name in ("mdtrt_d", "fee_list_d", "setl_d", "setl_list_diag_d"):
        a = _rows(got, name, "parquet")
        b = _rows(ref[: len(cuts)], name)
        assert a.height > 0 and sorted(a.fill_null("").rows()) == sorted(b.fill_null("").rows()), name
    assert not (tmp_path / "out" / ".split-parts").exists() and not (tmp_path / "out" / ".split-spill").exists()


def test_folder_names_with_quotes_are_not_pasted_into_sql(tmp_path):
    """The batch and output folders reach DuckDB as values (the relation API, bound settings),
    never as SQL text: names with a quote, a semicolon and a comment cut the same rows."""
    src = tmp_path / "it's; DROP TABLE x; --"
    src.mkdir()
    for f in SAMPLE.glob("*.csv"):
        (src / f.name).write_bytes(f.read_bytes())
    got = split_batch(src, tmp_path / "out'; --", CUTS[:2])
    ref = split_batch(SAMPLE, tmp_path / "ref", CUTS[:2])
    for name in ("mdtrt_d", "fee_list_d"):
        a, b = _rows(got, name), _rows(ref, name)
        assert a.height > 0 and sorted(a.fill_null("").rows()) == sorted(b.fill_null("").rows())
