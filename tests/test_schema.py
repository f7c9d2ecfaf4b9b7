"""A database file written by an earlier release opens, is brought up to date, and works.

``fixtures/db-67787fa.duckdb.gz`` was written by commit 67787fa (before nightly runs, excess units,
code names and schema versions): one visit, one line, one restrict_gender finding."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from kit import Batch, write_rules
from medaudit import db
from medaudit.hospital_loop import lifecycle
from medaudit.cli import app
from medaudit.engine import screen
from medaudit.incremental import Scope
from medaudit.library import load_library
from medaudit.loader import load_batch

OLD = Path(__file__).parent / "fixtures" / "db-67787fa.duckdb.gz"
RULES = """
- id: R-SEX-001
  version: 1
  name: 限女性
  type: restrict_gender
  items: {codes: ["002101030300000"]}
  params: {gender: 2}
"""


def old_copy(tmp_path: Path) -> Path:
    path = tmp_path / "old.duckdb"
    with gzip.open(OLD, "rb") as src, open(path, "wb") as out:
        shutil.copyfileobj(src, out)
    return path


def test_a_file_of_the_previous_release_is_brought_up_to_date_and_screens_nightly(tmp_path, wall_clock):
    wall_clock("2026-04-01")
    path = old_copy(tmp_path)
    raw = duckdb.connect(str(path))
    assert db.schema_version(raw) == 0
    assert "excess_units" not in {r[0] for r in raw.execute("DESCRIBE finding_lines").fetchall()}
    raw.close()
    con = db.connect(path)
    assert db.schema_version(con) == db.SCHEMA_VERSION
    assert "excess_units" in {r[0] for r in con.execute("DESCRIBE finding_lines").fetchall()}
    before = con.execute("SELECT finding_id, status, deduction_amt FROM findings").fetchall()
    assert len(before) == 1
    # a new night's batch: screened as what it touches (the old run did not record its batches,
    # so the first run of this version screens everything once), old findings and states kept
    b = Batch()
    v = b.visit(mdtrt_id="V-NEW-1", gend="1", begntime="2026-03-03 08:00:00", endtime="2026-03-03 10:00:00")
    b.line(v, "002101030300000", pric="120", bkkp_sn="L-NEW-1", hilist_name="子宫造影")
    load_batch(b.write(tmp_path / "night"), con)
    lib = load_library(write_rules(tmp_path / "rules", RULES))
    first = screen(con, lib, scope=Scope("new"))
    assert first.n_new_findings == 1 and first.scope == "all loaded data (the first post_hoc run)"
    after = con.execute("SELECT finding_id, status, deduction_amt FROM findings").fetchall()
    assert set(before) < set(after)
    assert con.execute("SELECT count(*) FROM visit_span").fetchall()[0][0] == 2
    con.close()
    # and the CLI reads it
    r = CliRunner().invoke(app, ["findings", "--db", str(path)])
    assert r.exit_code == 0 and "R-SEX-001" in r.output, r.output


def test_a_file_of_a_newer_release_is_refused_in_one_line(tmp_path):
    path = old_copy(tmp_path)
    db.connect(path).close()
    raw = duckdb.connect(str(path))
    raw.execute("INSERT INTO schema_meta VALUES (?)", [db.SCHEMA_VERSION + 1])
    raw.close()
    with pytest.raises(db.DatabaseTooNew, match="written by a newer medaudit"):
        db.connect(path)
    r = CliRunner().invoke(app, ["findings", "--db", str(path)])
    assert r.exit_code == 2 and "newer medaudit" in r.output and "Traceback" not in r.output, r.output


def test_date_literal_takes_dates_only():
    """The one place a date is written into SQL text (a view the planner must see as a constant)
    accepts a date object, never text: a string, even a well-formed one, is refused."""
    import datetime as dt

    assert db.date_literal(dt.date(2026, 3, 1)) == "DATE '2026-03-01'"
    assert db.date_literal(dt.datetime(2026, 3, 1, 23, 59)) == "DATE '2026-03-01'"
    for bad in ("2026-03-01", "2026-03-01' OR 1=1 --", None, 20260301):
        with pytest.raises(TypeError):
            db.date_literal(bad)


def test_the_results_id_index_of_an_older_file_is_dropped_and_its_rows_kept(tmp_path):
    """prealert_results.jr_id was a primary key whose index grew by every answer the service
    gave; opening an older file rewrites the table without it, rows and views intact."""
    from medaudit.prealert import store

    path = old_copy(tmp_path)
    raw = duckdb.connect(str(path))
    pk = """SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'prealert_results'
            AND constraint_type = 'PRIMARY KEY'"""
    assert raw.execute(pk).fetchall()[0][0] == 1
    raw.execute(
        "INSERT INTO prealert_results (jr_id, fixmedins_code, rule_id, created_at) "
        "VALUES ('a1', 'H001', 'R-SEX-001', TIMESTAMP '2026-03-02 09:15:00')"
    )
    raw.close()
    con = db.connect(path)
    assert con.execute(pk).fetchall()[0][0] == 0
    assert con.execute("SELECT jr_id, fixmedins_code, rule_id FROM prealert_results").fetchall() == [
        ("a1", "H001", "R-SEX-001")
    ]
    con.execute("SELECT * FROM finding_prealert_evidence").fetchall()  # the views over it still work
    assert store.drop_result_index(con) is False  # once only
    con.close()


def test_the_finding_id_indexes_of_an_older_file_are_dropped_and_ids_stay_unique(tmp_path, wall_clock):
    """findings.finding_id and finding_state.finding_id were primary keys whose index (random
    MD5 text) cost more than the rows at every screen's commit; opening an older file rewrites
    both tables without it, rows kept. Ids stay unique by construction: screening again, and
    again under a new rule version, adds no second row for an id."""
    wall_clock("2026-04-01")
    path = old_copy(tmp_path)
    pk = """SELECT table_name FROM duckdb_constraints() WHERE constraint_type = 'PRIMARY KEY'
            AND table_name IN ('findings', 'finding_state', 'finding_events') ORDER BY 1"""
    raw = duckdb.connect(str(path))
    assert [r[0] for r in raw.execute(pk).fetchall()] == ["finding_events", "finding_state", "findings"]
    before = raw.execute("SELECT * FROM findings").fetchall()
    cols = [r[0] for r in raw.execute("DESCRIBE findings").fetchall()]
    events = raw.execute("SELECT * FROM finding_events ORDER BY event_id").fetchall()
    event_cols = raw.execute("DESCRIBE finding_events").fetchall()
    raw.close()
    con = db.connect(path)
    assert con.execute(pk).fetchall() == []
    assert con.execute("SELECT * FROM findings").fetchall() == before
    assert [r[0] for r in con.execute("DESCRIBE findings").fetchall()] == cols
    assert db.drop_primary_key(con, "findings") is False  # once only
    # the audit log (version 6): same rows and columns, and its ids still drawn from the sequence
    assert events and con.execute("SELECT * FROM finding_events ORDER BY event_id").fetchall() == events
    assert [r[:2] for r in con.execute("DESCRIBE finding_events").fetchall()] == [r[:2] for r in event_cols]
    assert db.drop_primary_key(con, "finding_events") is False
    b = Batch()
    v = b.visit(mdtrt_id="V-NEW-1", gend="1", begntime="2026-03-03 08:00:00", endtime="2026-03-03 10:00:00")
    b.line(v, "002101030300000", pric="120", bkkp_sn="L-NEW-1", hilist_name="子宫造影")
    load_batch(b.write(tmp_path / "night"), con)
    lib = load_library(write_rules(tmp_path / "rules", RULES))
    for _ in range(2):
        screen(con, lib, scope=Scope("all"))
    lib2 = load_library(write_rules(tmp_path / "rules2", RULES.replace("version: 1", "version: 2")))
    screen(con, lib2, scope=Scope("all"))
    for table in ("findings", "finding_state"):
        n, distinct = con.execute(f"SELECT count(*), count(DISTINCT finding_id) FROM {table}").fetchall()[0]
        assert n == distinct == 4, table  # the old one, the new line's, and both again under version 2
    ids = [r[0] for r in con.execute("SELECT event_id FROM finding_events ORDER BY event_id").fetchall()]
    assert len(ids) > len(events) and len(set(ids)) == len(ids) and min(ids[len(events) :]) > events[-1][0]
    lifecycle.log_event(con, before[0][0], None, "审核员", "note", None, None, "加一条")
    assert con.execute("SELECT max(event_id) FROM finding_events").fetchall()[0][0] == ids[-1] + 1
    con.close()


def test_result_ids_sort_in_time_order():
    from medaudit.prealert import store

    ids = [store.new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    assert ids == sorted(ids, key=lambda i: i[:12])  # the time part never goes back


def test_a_file_held_only_by_an_unreachable_connection_opens_under_another_configuration(tmp_path):
    """Commands run one after another in one process (the tests' CLI runner, the web app): a
    command's read-write connection that only Python's cycle collector can free must not make the
    next command's read-only open fail ('different configuration'); one still in use does."""
    import gc

    path = tmp_path / "x.duckdb"
    was_enabled = gc.isenabled()
    gc.disable()  # the cycle below stays until collected, as it may between two commands
    try:

        class Holder:
            pass

        held = Holder()
        held.self, held.con = held, db.connect(path)
        del held
        ro = db.connect(path, read_only=True)
        assert ro.execute("SELECT count(*) FROM findings").fetchall() == [(0,)]
        ro.close()
        live = db.connect(path)
        with pytest.raises(duckdb.ConnectionException, match="different configuration"):
            db.connect(path, read_only=True)
        live.close()
    finally:
        if was_enabled:
            gc.enable()
