"""A batch made in parts (``generate(part_lines=...)``, for batches larger than memory): each part
its own seed and ids, appended to the batch's files. It must load and screen like a batch made in
one piece (recall and precision 1.0 against its answer key), keep every person inside one part,
and be a function of (size, seed, part size)."""

from __future__ import annotations

import filecmp
import importlib

import polars as pl
import pytest

from medaudit import db
from medaudit.engine import screen
from medaudit.loader import load_batch
from medaudit.sample import generate
from medaudit.sample.check import compare
from medaudit.sample.generate import LINES_PER_VISIT, parts
from test_end_to_end import entity_findings, sample_library

#: parts of about 400 visits
PART = int(400 * LINES_PER_VISIT)


def _part_of(g, mdtrt_id: str) -> int:
    n = int(mdtrt_id[6:])
    return next(k for k, (lo, hi) in enumerate(g.parts) if lo <= n <= hi)


def test_parts_are_as_even_as_can_be():
    assert parts(1200, PART) == [400, 400, 400]
    assert parts(1201, PART) == [301, 300, 300, 300]
    assert parts(300, PART) == [300]


@pytest.mark.slow  # over 3 s (generates, loads and screens a batch)
def test_a_batch_in_three_parts_screens_exactly_and_keeps_persons_whole(tmp_path):
    g = generate(tmp_path / "batch", visits=1200, seed=20260302, part_lines=PART)
    assert len(g.parts) == 3
    visits = pl.read_csv(tmp_path / "batch" / "mdtrt_d.csv", infer_schema=False)
    assert visits.height == g.tables["mdtrt_d.csv"] > 1200  # the visits injectors add included
    part = visits.select("psn_no", pl.col("mdtrt_id").map_elements(lambda m: _part_of(g, m), pl.Int64).alias("part"))
    assert part["part"].unique().sort().to_list() == [0, 1, 2]
    split = part.group_by("psn_no").agg(pl.col("part").n_unique().alias("n")).filter(pl.col("n") > 1)
    assert split.height == 0, f"persons in more than one part: {split.head()}"
    # ids never collide across parts: the loader rejects nothing (a repeated key would be rejected)
    con = db.connect(tmp_path / "parts.duckdb")
    loaded = load_batch(tmp_path / "batch", con)
    assert sum(t.rejected for t in loaded.tables) == 0, loaded.rejected
    assert {t.table: t.loaded for t in loaded.tables}["fee_list_d"] == g.tables["fee_list_d.csv"]
    result = screen(con, sample_library())
    key = pl.read_csv(tmp_path / "batch" / "answer_key.csv", infer_schema=False)
    cmp = compare(con, key, result.run_id)
    assert cmp.missed.height == 0 and cmp.extra.height == 0, cmp.report()
    assert cmp.recall == 1.0 and cmp.precision == 1.0
    found, expected = entity_findings(con, key)
    assert found == expected
    # what is decided over the whole batch is in the key for every part: inventory_mismatch's
    # lines and overtreatment's visits (each part adds a group of 30 R51 visits)
    inv = key.filter(pl.col("rule_type") == "inventory_mismatch")
    ovt = key.filter(pl.col("rule_type") == "overtreatment")
    assert inv.height and ovt.height
    assert {_part_of(g, m) for m in ovt["mdtrt_id"]} == {0, 1, 2}


@pytest.fixture
def small_chunks(monkeypatch):
    g = importlib.import_module("medaudit.sample.generate")
    monkeypatch.setattr(g, "CHUNK_LINES", 613)  # several chunks (row groups) in every part
    return g


@pytest.mark.slow  # over 3 s (generates four batches)
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_batch_in_parts_is_the_same_for_the_same_seed(tmp_path, small_chunks, fmt):
    a = generate(tmp_path / "a", visits=600, seed=11, fmt=fmt, part_lines=200 * LINES_PER_VISIT)
    b = generate(tmp_path / "b", visits=600, seed=11, fmt=fmt, part_lines=200 * LINES_PER_VISIT)
    assert len(a.parts) == 3 and a.tables == b.tables
    for name in a.tables:
        assert filecmp.cmp(tmp_path / "a" / name, tmp_path / "b" / name, shallow=False), name
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(a.tables)  # no .part left
    fee = f"fee_list_d.{fmt}"
    generate(tmp_path / "c", visits=600, seed=12, fmt=fmt, part_lines=200 * LINES_PER_VISIT)
    assert not filecmp.cmp(tmp_path / "a" / fee, tmp_path / "c" / fee, shallow=False)
    # part 0 is drawn from the batch seed: its lines are those of the batch of its size in one piece
    one = generate(tmp_path / "one", visits=200, seed=11, fmt=fmt)
    read = (lambda p: pl.read_parquet(p)) if fmt == "parquet" else (lambda p: pl.read_csv(p, infer_schema=False))
    first = read(tmp_path / "one" / fee)
    assert read(tmp_path / "a" / fee).head(first.height).equals(first)
    assert one.tables[fee] < a.tables[fee]


def test_a_part_that_fails_leaves_no_files(tmp_path, small_chunks, monkeypatch):
    from medaudit.sample.injectors import discover

    injectors = discover()
    inj = injectors["duplicate_line"]
    inject = inj.inject

    def fails_in_part_1(ctx):
        if ctx.data.part == 1:
            raise ValueError("injector failed (test)")
        inject(ctx)

    monkeypatch.setattr(inj, "inject", fails_in_part_1)
    monkeypatch.setattr(small_chunks, "discover", lambda: injectors)
    out = tmp_path / "batch"
    with pytest.raises(ValueError, match="injector failed"):
        generate(out, visits=600, seed=11, part_lines=200 * LINES_PER_VISIT)
    assert sorted(p.name for p in out.iterdir()) == []


def test_a_failing_fee_writer_in_a_part_leaves_no_files(tmp_path, small_chunks, monkeypatch):
    """fee_list_d of a part is written while the next part is made: its error is raised all the same."""
    g = small_chunks
    chunks = g.FeeLines.chunks
    calls = []

    def failing(self):
        calls.append(1)
        for k, part in enumerate(chunks(self)):
            if len(calls) == 2 and k == 2:  # the second part's third chunk
                raise OSError("disk full (test)")
            yield part

    monkeypatch.setattr(g.FeeLines, "chunks", failing)
    out = tmp_path / "batch"
    with pytest.raises(OSError, match="disk full"):
        generate(out, visits=600, seed=11, fmt="parquet", part_lines=200 * LINES_PER_VISIT)
    assert sorted(p.name for p in out.iterdir()) == []


def test_sample_generate_makes_parts_from_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from medaudit import cli

    args = ["sample", "generate", "--out", str(tmp_path / "b"), "--visits", "600", "--part-lines", "3880"]
    r = CliRunner().invoke(cli.app, args, env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "3 parts" in r.output
    r = CliRunner().invoke(cli.app, [*args[:-1], "10"], env={"COLUMNS": "200"})
    assert r.exit_code != 0 and "--part-lines must be at least 1000" in r.output
