"""Attacks on nightly screening (``medaudit screen --batch/--since/--period/--all``): hostile option
values are refused with a message before anything runs, and hostile ids in the loaded data
(quotes, backslashes, LIKE wildcards, SQL comments) pass through the spans and context tables
the nightly run builds exactly as a full re-screen reads them."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from kit import Batch, write_rules
from medaudit import db as dbm
from medaudit.cli import app
from test_incremental import HBA1C, PERIOD_RULE, assert_nightly_equals_full


@pytest.fixture(scope="module")
def screened_db(tmp_path_factory):
    """A small batch loaded and screened once with the one period rule."""
    folder = tmp_path_factory.mktemp("nightly")
    b = Batch()
    for day in ("2026-03-01", "2026-03-05"):
        b.line(b.visit(psn_no="P1", begntime=f"{day} 08:00:00", endtime=f"{day} 10:00:00"), HBA1C, pric="45")
    rules = write_rules(folder / "rules", PERIOD_RULE)
    db = folder / "a.duckdb"
    r = CliRunner().invoke(app, ["screen", str(b.write(folder / "batch")), "--db", str(db), "--rules", str(rules)])
    assert r.exit_code == 0, r.output
    return db, rules


def _state(db):
    con = dbm.connect(db)
    try:
        return [
            con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0]
            for t in ("screen_runs", "screened_batches", "findings", "load_log", "span_batches")
        ]
    finally:
        con.close()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--period", "2026-03' OR '1'='1"], "--period: \"2026-03' OR '1'='1\" is not a month"),
        (["--period", "2026-13"], "--period: '2026-13' is not a month"),
        (["--period", "2026-00"], "--period: '2026-00' is not a month"),
        (["--period", "[/]2026-03"], "--period: '[/]2026-03' is not a month"),
        (["--since", "2026-03-01'; DROP TABLE load_log; --"], "is not a date or time"),
        (["--since", "[bold]2026-03-01"], "--since: '[bold]2026-03-01' is not a date or time"),
        (["--batch", "-1"], "--batch: no batch -1 is loaded"),
        (["--batch", "2147483648"], "--batch: no batch 2147483648 is loaded"),
        (["--batch", "1", "--since", "2026-01-01"], "give one of --batch, --since, not several"),
    ],
)
def test_hostile_scope_options_are_refused_and_change_nothing(screened_db, args, message):
    screened_db, rules = screened_db
    before = _state(screened_db)
    r = CliRunner().invoke(app, ["screen", str(screened_db), "--rules", str(rules), *args])
    out = " ".join(r.output.split())
    assert r.exit_code == 2 and message in out, out
    assert "Traceback" not in out
    assert _state(screened_db) == before


@pytest.mark.slow
def test_hostile_ids_pass_through_spans_and_context_as_in_a_full_screen(tmp_path):
    """Person, visit and line ids made of quotes, backslashes, wildcards and comments: nightly
    runs find exactly what full re-screens find, night by night."""

    def unit(b: Batch, day: str, psn: str, tag: str) -> None:
        v = b.visit(mdtrt_id=f"V'{tag}\\%_--{day}", psn_no=psn, begntime=f"{day} 08:00:00", endtime=f"{day} 10:00:00")
        b.line(v, HBA1C, pric="45", bkkp_sn=f"F';DROP TABLE findings;--{tag}{day}")

    nights = [Batch(), Batch(), Batch()]
    for psn, tag in (("P'1\"; --", "a"), ("P%", "b"), ("P_", "c")):
        for d in ("2026-03-01", "2026-03-05"):
            unit(nights[0], d, psn, tag)
        unit(nights[1], "2026-03-09", psn, tag)
        unit(nights[2], "2026-02-27", psn, tag)
    full = assert_nightly_equals_full(tmp_path, nights, PERIOD_RULE)
    # the wildcard persons are told apart from one another (no LIKE anywhere): each has its own findings
    psn_of = {r[8]: r for r in full[2]["findings"]}
    assert any("\\%_--2026-03-05" in v for v in psn_of) and len(full[2]["findings"]) >= 6
