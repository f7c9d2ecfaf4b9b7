"""Every connection gets a memory limit and a spill folder (issue 15): defaults, config file, CLI."""

from __future__ import annotations

import os

import duckdb
import pytest
from typer.testing import CliRunner

from medaudit import db, resources
from medaudit.cli import app


@pytest.fixture(autouse=True)
def _reset():
    resources.configure(config=None)  # what a process without options and config gets
    yield
    resources._current = resources.Resources()


def setting(con, name: str) -> str:
    return con.execute("SELECT current_setting(?)", [name]).fetchall()[0][0]


def size_of(value: str) -> str:
    """How DuckDB shows a size it was given."""
    c = duckdb.connect()
    c.execute("SET memory_limit = ?", [value])
    return setting(c, "memory_limit")


def duckdb_part(budget_bytes: int) -> str:
    """How DuckDB shows four fifths of a budget (in MiB, as medaudit sets it)."""
    return size_of(f"{int(budget_bytes * 0.8) // 2**20}MiB")


def test_default_budget_is_a_quarter_of_memory_and_duckdb_gets_a_fifth_not_its_80_percent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no medaudit.toml here
    resources.configure()
    con = db.connect(tmp_path / "a.duckdb")
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    budget = max(total // 4, 2**30) // 2**20 * 2**20
    assert resources.current().effective_memory_limit == f"{budget // 2**20}MiB"
    assert setting(con, "memory_limit") == duckdb_part(budget)
    assert setting(con, "memory_limit") != setting(duckdb.connect(), "memory_limit")  # DuckDB's own default
    assert setting(con, "temp_directory") == str(tmp_path / "a.duckdb") + ".tmp"
    mem = db.connect(":memory:")
    assert setting(mem, "temp_directory").endswith("medaudit-spill")


def test_config_file_then_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "medaudit.toml").write_text('[duckdb]\nmemory_limit = "1500MB"\ntemp_dir = "spill-here"\n')
    resources.configure()
    con = db.connect(tmp_path / "a.duckdb")
    assert setting(con, "memory_limit") == duckdb_part(1500 * 10**6)
    assert setting(con, "temp_directory").endswith("spill-here")
    con.close()
    resources.configure(memory_limit="1GB", temp_dir=tmp_path / "cli-spill")  # command line wins
    con = db.connect(tmp_path / "b.duckdb")
    assert setting(con, "memory_limit") == duckdb_part(10**9)
    assert setting(con, "temp_directory") == str(tmp_path / "cli-spill")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--memory-limit", "lots"], "--memory-limit: memory limit must be a size such as 6GB"),
        # a value meant to end the SET statement: refused by the size check (and it reaches
        # DuckDB only as a bound parameter in any case)
        (["--memory-limit", "1GB'; DROP TABLE findings; --"], "--memory-limit: memory limit must be a size"),
        (["--config", "missing.toml"], "missing.toml: no such config file"),
    ],
)
def test_bad_values_are_refused_with_where_they_came_from(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(app, [*args, "findings", "--db", str(tmp_path / "a.duckdb")], env={"COLUMNS": "200"})
    assert r.exit_code == 2
    assert message in " ".join(r.output.split())


@pytest.mark.parametrize(
    "budget, share",
    [
        ("8GB", 6103),
        (" 8 GB ", 6103),
        ("5.5GiB", 4505),
        ("6000MB", 4577),
        ("2 gigabytes", 1525),
        ("1TiB", 838860),
        ("1KB", 64),
    ],
)
def test_duckdb_gets_four_fifths_of_the_budget_in_mib(budget, share):
    """``--memory-limit 8GB`` is the process's budget: DuckDB's limit is 0.8 x 8 x 10^9 bytes =
    6,103 MiB (at least 64 MiB); the rest is for what the process holds beside DuckDB."""
    assert resources.Resources(budget).duckdb_memory_limit == f"{share}MiB"


def test_bad_config_names_the_file_and_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "medaudit.toml").write_text('[duckdb]\nmemory_limit = "six"\n')
    with pytest.raises(resources.ResourceError, match=r"medaudit.toml: \[duckdb\] memory_limit: .*got 'six'"):
        resources.configure()
    (tmp_path / "medaudit.toml").write_text('[duckdb]\nmemory = "6GB"\n')
    with pytest.raises(resources.ResourceError, match=r"medaudit.toml: \[duckdb\] memory: unknown setting"):
        resources.configure()
    (tmp_path / "medaudit.toml").write_text("[duckdb\n")
    with pytest.raises(resources.ResourceError, match="medaudit.toml: not a valid TOML"):
        resources.configure()


#: a statement that reads one subquery (over a view with a semi join, as a night's month lines
#: are) twice: once to find candidate groups, once to window over their rows
_TWICE = """EXPLAIN WITH c AS (SELECT g FROM (SELECT *, i * 2 AS k FROM tv WHERE g < 8) GROUP BY g HAVING sum(i) > 5)
            SELECT b.*, sum(i) OVER (PARTITION BY b.g) FROM (SELECT *, i * 2 AS k FROM tv WHERE g < 8) b
            JOIN c ON c.g = b.g"""


def _reads_twice(con) -> bool:
    """Whether DuckDB plans the twice-read subquery as one materialised copy."""
    con.execute("""CREATE OR REPLACE TEMP TABLE t AS SELECT range AS i, range % 10 AS g, range % 7 AS v FROM range(1000);
                   CREATE OR REPLACE TEMP TABLE u AS SELECT range AS v FROM range(5);
                   CREATE OR REPLACE TEMP VIEW tv AS SELECT * FROM t WHERE v IN (SELECT v FROM u)""")
    return "common_subplan" not in con.execute(_TWICE).fetchall()[0][1].lower()


def test_a_subquery_read_twice_is_read_twice_not_copied(tmp_path):
    """The type queries read candidate groups' lines twice on purpose: DuckDB's common_subplan
    optimiser would copy every matched line instead (11-12 s against 1.3 s for inventory_mismatch
    over a night's 12M lines). Every medaudit connection runs without it, also after a statement
    run with the joins as written."""
    assert not _reads_twice(duckdb.connect())  # DuckDB alone would copy: the check below can fail
    con = db.connect(tmp_path / "t.duckdb")
    assert _reads_twice(con)
    with db.joins_as_written(con):
        assert "join_order" in setting(con, "disabled_optimizers")
    assert _reads_twice(con)


def test_a_type_that_hashes_as_written_leaves_the_connection_as_it_was(tmp_path):
    """duplicate_charge runs with DuckDB hashing the right side of its joins as written (the
    few main lines, not the many included ones its estimate would pick); inside, the other
    disabled optimisers stay disabled, and after it the connection's setting is as before."""
    con = db.connect(tmp_path / "t.duckdb")
    before = setting(con, "disabled_optimizers")
    with db.hash_as_written(con):
        inside = setting(con, "disabled_optimizers")
        assert "build_side_probe_side" in inside and "common_subplan" in inside
    assert setting(con, "disabled_optimizers") == before and "build_side_probe_side" not in before


def _documented_example(type_name: str) -> str:
    """The YAML example in a rule type's documentation (one source for the doc and the test)."""
    import re

    from medaudit.types import REGISTRY

    return re.search(r"```yaml\n(.*?)```", REGISTRY[type_name].doc, re.S).group(1)


_SEX_RULE = """
- id: R-SEX
  version: 1
  name: 限女性
  type: restrict_gender
  items: {codes: ["002101030300000"]}
  params: {gender: 2}
"""


def test_the_screen_hashes_as_written_only_the_types_that_ask(tmp_path, monkeypatch):
    """A screen runs duplicate_charge's statement with the right side hashed as written, and no
    other type's (restrict_gender's here), and the pair is still found."""
    from kit import Batch, write_rules
    from medaudit.engine import screen
    from medaudit.library import load_library
    from medaudit.loader import load_batch

    b = Batch()
    v = b.visit(mdtrt_id="V1", begntime="2026-03-02 08:00:00", endtime="2026-03-02 12:00:00")
    b.line(v, "001103000010000", pric="200", bkkp_sn="L-MAIN", fee_ocur_time="2026-03-02 09:00:00")
    b.line(v, "001102000030000", pric="30", bkkp_sn="L-INCL", fee_ocur_time="2026-03-02 09:30:00")
    b.line(v, "002101030300000", pric="120", bkkp_sn="L-SEX", fee_ocur_time="2026-03-02 10:00:00")
    con = db.connect(tmp_path / "t.duckdb")
    load_batch(b.write(tmp_path / "batch"), con)
    seen: list[str] = []
    real = db.hash_as_written

    def recording(c):
        seen.append(setting(c, "disabled_optimizers"))
        return real(c)

    monkeypatch.setattr(db, "hash_as_written", recording)
    rules = _documented_example("duplicate_charge") + _SEX_RULE
    screen(con, load_library(write_rules(tmp_path / "rules", rules)))
    assert len(seen) == 1  # duplicate_charge's statement only
    assert con.execute("SELECT rule_id FROM findings ORDER BY 1").fetchall() == [("R-DUP-001",), ("R-SEX",)]
    assert "build_side_probe_side" not in setting(con, "disabled_optimizers")


def test_in_transaction_is_asked_without_side_effects(tmp_path):
    """The schema upgrade asks whether the caller holds a transaction; asking must not abort it
    (a BEGIN that fails inside one does)."""
    con = db.connect(tmp_path / "t.duckdb")
    assert not db.in_transaction(con)
    con.execute("BEGIN")
    assert db.in_transaction(con)
    con.execute("CREATE TABLE x AS SELECT 1 AS a")
    assert db.in_transaction(con)
    con.execute("COMMIT")  # the transaction was not aborted by asking
    assert not db.in_transaction(con)
    assert con.execute("SELECT a FROM x").fetchall() == [(1,)]


def test_a_transaction_joins_the_callers_or_is_its_own(tmp_path):
    """db.transaction: outside one, its statements commit together or not at all; inside the
    caller's, they are part of it (the caller's rollback undoes them)."""
    con = db.connect(tmp_path / "t.duckdb")
    con.execute("CREATE TABLE x (a INTEGER)")
    with pytest.raises(RuntimeError):
        with db.transaction(con):
            con.execute("INSERT INTO x VALUES (1)")
            raise RuntimeError("half-way")
    assert con.execute("SELECT count(*) FROM x").fetchall() == [(0,)]
    with db.transaction(con):
        con.execute("INSERT INTO x VALUES (2)")
    assert con.execute("SELECT a FROM x").fetchall() == [(2,)]
    con.execute("BEGIN")
    with db.transaction(con):
        con.execute("INSERT INTO x VALUES (3)")
    assert db.in_transaction(con)  # still the caller's
    con.execute("ROLLBACK")
    assert con.execute("SELECT a FROM x").fetchall() == [(2,)]
