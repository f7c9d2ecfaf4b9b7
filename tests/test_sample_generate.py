"""The generator writes fee_list_d a chunk of lines at a time (so a 10M-line batch never holds the
whole table as text): the chunks must make the same file as one piece, in CSV and in Parquet."""

from __future__ import annotations

import filecmp
import importlib
from pathlib import Path

import polars as pl
import pytest

from medaudit.sample.generate import generate

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "sample_data" / "batch"


@pytest.fixture
def small_chunks(monkeypatch):
    # the module (``medaudit.sample.generate`` as an attribute is the package's function)
    g = importlib.import_module("medaudit.sample.generate")
    # a chunk size that divides nothing evenly, so chunk edges fall inside visits
    monkeypatch.setattr(g, "CHUNK_LINES", 997)


def test_chunks_write_the_committed_sample_byte_for_byte(tmp_path, small_chunks):
    """sample_data/batch was written in one piece; in chunks of 997 lines every file is the same."""
    if not COMMITTED.is_dir():
        pytest.skip("sample_data/batch is not in this checkout")
    g = generate(tmp_path / "batch", visits=300, seed=1)
    assert g.tables["fee_list_d.csv"] > 3 * 997
    for name in g.tables:
        assert filecmp.cmp(tmp_path / "batch" / name, COMMITTED / name, shallow=False), name


def test_parquet_chunks_hold_the_csv_rows(tmp_path, small_chunks):
    generate(tmp_path / "csv", visits=300, seed=1)
    generate(tmp_path / "pq", visits=300, seed=1, fmt="parquet")
    csv = pl.read_csv(tmp_path / "csv" / "fee_list_d.csv", infer_schema=False)
    pq = pl.read_parquet(tmp_path / "pq" / "fee_list_d.parquet")
    assert pq.columns == csv.columns
    assert pq.height == csv.height > 3 * 997
    # CSV writes an empty text as an empty field and reads it back as null
    assert pq.with_columns(pl.all().replace("", None)).equals(csv)


def test_fen_text_is_exact():
    """Amounts in fen become the text a clerk writes, for signs, small and large amounts, nulls."""
    g = importlib.import_module("medaudit.sample.generate")
    fen = [None, 0, 1, 5, 10, 99, 100, 101, 12345, -1, -5, -100, -12345, 10**12 + 7, -(10**12) - 7]
    want = [
        None,
        "0.00",
        "0.01",
        "0.05",
        "0.10",
        "0.99",
        "1.00",
        "1.01",
        "123.45",
        "-0.01",
        "-0.05",
        "-1.00",
        "-123.45",
        "10000000000.07",
        "-10000000000.07",
    ]
    got = pl.DataFrame({"x": fen}, schema={"x": pl.Int64}).select(g._fen("x")).to_series().to_list()
    assert got == want


@pytest.mark.parametrize("fraction", [False, True])
def test_merge_lines_is_the_sort(fraction):
    """Added lines merged into ordered lines: the order a full sort gives (visit, time,
    bkkp_sn), ties on visit and second included; a fraction of a second takes the sort."""
    import datetime as dt

    import numpy as np

    from medaudit.sample.clean import SN_ORDER, merge_lines, sn

    rng = np.random.default_rng(5)
    t0 = dt.datetime(2026, 3, 1, 8, 0)

    def frame(n, first_sn):
        secs = rng.integers(0, 40, n)  # few distinct seconds: many ties
        return pl.DataFrame(
            {
                "vi": rng.integers(0, 30, n),
                "time": [
                    t0 + dt.timedelta(seconds=int(s), microseconds=(7 if fraction and k == 0 else 0))
                    for k, s in enumerate(secs)
                ],
                "bkkp_sn": [sn(first_sn + k) for k in rng.permutation(n)],
                "cnt": rng.integers(1, 5, n),
            }
        )

    base = frame(3000, 1).sort("vi", "time", SN_ORDER)
    extra = frame(400, 5000)
    want = pl.concat([base, extra]).sort("vi", "time", SN_ORDER)
    assert merge_lines(base, extra).equals(want)
    assert merge_lines(base, extra.head(0)).equals(base)
