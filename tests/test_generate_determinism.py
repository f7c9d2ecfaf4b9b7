"""The generator's output is a function of (size, seed): the same seed gives the same bytes, in
CSV and in Parquet, although fee_list_d is now formatted and written on threads of its own while
the finish steps run. And a writer that fails leaves no fee_list_d behind, not even part of one."""

from __future__ import annotations

import filecmp
import importlib

import pytest

from medaudit.sample.generate import generate


@pytest.fixture
def small_chunks(monkeypatch):
    g = importlib.import_module("medaudit.sample.generate")
    monkeypatch.setattr(g, "CHUNK_LINES", 613)  # many chunks: the pipeline really runs ahead
    return g


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_same_seed_same_bytes(tmp_path, small_chunks, fmt):
    a = generate(tmp_path / "a", visits=400, seed=11, fmt=fmt)
    b = generate(tmp_path / "b", visits=400, seed=11, fmt=fmt)
    assert a.tables == b.tables
    assert a.tables[f"fee_list_d.{fmt}"] > 5 * 613
    for name in a.tables:
        assert filecmp.cmp(tmp_path / "a" / name, tmp_path / "b" / name, shallow=False), name
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(a.tables)  # no .part left
    generate(tmp_path / "c", visits=400, seed=12, fmt=fmt)
    assert not filecmp.cmp(tmp_path / "a" / f"fee_list_d.{fmt}", tmp_path / "c" / f"fee_list_d.{fmt}", shallow=False)


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_failing_fee_writer_leaves_no_file(tmp_path, small_chunks, monkeypatch, fmt):
    g = small_chunks
    chunks = g.FeeLines.chunks

    def failing(self):
        for k, part in enumerate(chunks(self)):
            if k == 2:
                raise OSError("disk full (test)")
            yield part

    monkeypatch.setattr(g.FeeLines, "chunks", failing)
    out = tmp_path / "batch"
    out.mkdir()
    (out / f"fee_list_d.{fmt}").write_text("stale")
    with pytest.raises(OSError, match="disk full"):
        generate(out, visits=400, seed=11, fmt=fmt)
    left = sorted(p.name for p in out.iterdir())
    assert not [n for n in left if n.startswith("fee_list_d")], left


def test_a_failing_finish_step_stops_the_fee_writer(tmp_path, small_chunks, monkeypatch):
    """The writer starts before the finish steps: when one of them fails, generate raises its
    error, the writer stops and its part file is removed."""
    from medaudit.sample.injectors import discover

    injectors = discover()
    inj = injectors["inventory_mismatch"]

    def boom(ctx, tables):
        raise ValueError("finish failed (test)")

    monkeypatch.setattr(inj, "finish", boom)
    monkeypatch.setattr(small_chunks, "discover", lambda: injectors)
    out = tmp_path / "batch"
    with pytest.raises(ValueError, match="finish failed"):
        generate(out, visits=400, seed=11)
    assert not [p.name for p in out.glob("fee_list_d*")] if out.exists() else True
