"""Crash tests: ``kill -9`` during load, screen and finalize, then run again.

An uninterrupted run of the real ``medaudit`` command (load -> screen -> two review decisions
-> deduct finalize --out) on a generated batch is the reference. For each of load, screen and
finalize, the command runs in its own process (``python -m medaudit``) on a copy of the
database prepared up to the step before and is killed with SIGKILL at a seeded point. Then:

1. the database opens (DuckDB replays its write-ahead log);
2. it holds exactly the state before the step or exactly the state after it (by content: every
   table's row count and a digest of its rows, the computer's clock and sequence numbers left
   out; findings, amounts, statements, load_log and the audit log also as readable totals):
   the step is one transaction, nothing is half-written; a statement workbook is whole or absent;
3. the step runs again and the database equals the reference after the step, to the cent,
   with nothing written twice (a screen that had committed is one more run that finds nothing
   new); after finalize the clerk has the same statement workbook;
4. on the first kill of each step (every kill with ``MEDAUDIT_CRASH_FULL=1``) the following
   steps run too and the end state equals the uninterrupted run's.

Where a kill lands, without any hook in the product: delays count from the moment the process
has the database file open (seen in ``/proc/PID/fd``), in the early, middle and late third of
the step's measured work; kind ``commit`` waits until the write-ahead log has grown to a
seeded part of the size it reached in the uninterrupted run (the COMMIT writing it) and kills
0-50 ms later; kind ``checkpoint`` waits until the database file is written while the log is
there (the checkpoint copying the log into it) and kills 0-30 ms later.
The printed summary (``pytest -s``) says for each kill what the files showed at that moment
and which state the database was found in.

Budget: ``MEDAUDIT_CRASH_RUNS`` kills per step (default 4; the kinds are taken in the order
commit, early, middle, late, checkpoint, then again: 2 gives commit and early), the larger run
e.g. ``MEDAUDIT_CRASH_RUNS=50``; ``MEDAUDIT_CRASH_SEED`` moves the kill points.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from kit import set_wall_clock
from medaudit.cli import app
from medaudit.sample.generate import generate

REPO = Path(__file__).resolve().parents[1]
RUNS = int(os.environ.get("MEDAUDIT_CRASH_RUNS", "4"))
SEED = int(os.environ.get("MEDAUDIT_CRASH_SEED", "20261201"))
FULL = os.environ.get("MEDAUDIT_CRASH_FULL", "") not in ("", "0")
VISITS = 1500
SCREEN_DAY = "2026-10-12"  # the batch settles 2026-01..09; windows open on this day
FINAL_DAY = "2026-11-30"  # every 10-working-day window has closed
PERIOD = "2026-04"
KINDS = ("commit", "early", "middle", "late", "checkpoint")  # the first n of these (cycled) for n kills


#: columns filled from the computer's clock (the test sets it per step, see :func:`cli_argv`) or a
#: sequence: they differ between two runs of the same work and are left out of the comparison.
#: Screening again is another run (a row in screen_runs, findings' last_run): the runs are
#: compared as a list instead (see :func:`screened_again`).
VOLATILE = {
    "load_log": {"loaded_at"},
    "screen_runs": {"run_id", "started_at", "finished_at"},
    "findings": {"created_at", "last_run"},
    "finding_events": {"event_id"},
}
RUN_LOG = {"screen_runs"}


# ---------------------------------------------------------------------------- the database's content


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def snapshot(path: Path) -> dict:
    """What the database holds, by content: per table (rows, digest of the rows), plus the totals
    a clerk would compare. A table that does not exist yet counts as empty."""
    con = duckdb.connect(str(path))  # read-write: replays the write-ahead log like any user would
    try:
        tables = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
                "AND schema_name = 'main' AND NOT temporary ORDER BY 1"
            ).fetchall()
        ]
        out: dict = {}
        for t in tables:
            if t in RUN_LOG:
                continue
            cols = [
                r[0]
                for r in con.execute(
                    "SELECT column_name FROM duckdb_columns() WHERE database_name = current_database() "
                    "AND schema_name = 'main' AND table_name = ? ORDER BY column_index",
                    [t],
                ).fetchall()
                if r[0] not in VOLATILE.get(t, ())
            ]
            n, digest = con.execute(
                f"SELECT count(*), coalesce(sum(hash({', '.join(_q(c) for c in cols)})), 0) FROM {_q(t)}"
            ).fetchall()[0]
            if n:
                out[t] = (n, int(digest))
        has = set(tables)

        def rows(sql: str, needs: str, missing=()):
            """The query's rows; ``missing`` when its table does not exist yet (a kill during the
            first load can leave part of the schema: that is the state before the load)."""
            return con.execute(sql).fetchall() if needs in has else list(missing)

        out["load_log rows"] = rows(
            "SELECT batch_id, content_hash, source, summary FROM load_log ORDER BY 1", "load_log"
        )
        out["screen runs"] = rows(
            "SELECT stage, rules_digest, n_rules, n_hits, n_new_findings FROM screen_runs ORDER BY run_id",
            "screen_runs",
        )
        # every finding was seen by the last run (a re-screen touches them all)
        out["findings seen by the last run"] = rows(
            "SELECT count(*) FROM findings WHERE last_run = (SELECT max(run_id) FROM screen_runs)",
            "findings",
            missing=[(0,)],
        )
        out["findings totals"] = rows(
            "SELECT status, count(*), sum(flagged_amt), sum(claimed_amt), sum(deduction_amt) FROM findings "
            "GROUP BY 1 ORDER BY 1",
            "findings",
        )
        out["statements"] = rows(
            "SELECT statement_id, period, fixmedins_code, seq, n_findings, n_lines, total, created_at, created_by "
            "FROM deduction_statements ORDER BY 1",
            "deduction_statements",
        )
        out["audit log"] = sorted(
            Counter(
                rows(
                    "SELECT action, from_status, to_status, actor, CAST(event_at AS VARCHAR) FROM finding_events",
                    "finding_events",
                )
            ).items(),
            key=str,
        )
        return out
    finally:
        con.close()


def doubled(path: Path) -> dict:
    """Anything written twice (each must be empty)."""
    con = duckdb.connect(str(path))
    try:
        q = {
            "findings": "SELECT finding_id, count(*) FROM findings GROUP BY 1 HAVING count(*) > 1",
            "finding_lines": "SELECT finding_id, bkkp_sn, role, count(*) FROM finding_lines GROUP BY ALL HAVING count(*) > 1",
            "finding_state": "SELECT finding_id, count(*) FROM finding_state GROUP BY 1 HAVING count(*) > 1",
            "load_log": "SELECT content_hash, count(*) FROM load_log GROUP BY 1 HAVING count(*) > 1",
            "fee_list_d": "SELECT bkkp_sn, count(*) FROM fee_list_d GROUP BY 1 HAVING count(*) > 1",
            "deduction_items": "SELECT finding_id, count(*) FROM deduction_items GROUP BY 1 HAVING count(*) > 1",
            "deduction_lines": "SELECT bkkp_sn, count(*) FROM deduction_lines GROUP BY 1 HAVING count(*) > 1",
            "deduction_statements": "SELECT period, fixmedins_code, count(*) FROM deduction_statements GROUP BY ALL HAVING count(*) > 1",
            "audit transitions": "SELECT finding_id, action, from_status, to_status, count(*) FROM finding_events "
            "GROUP BY ALL HAVING count(*) > 1",
        }
        return {k: v for k, sql in q.items() if (v := con.execute(sql).fetchall())}
    finally:
        con.close()


# ---------------------------------------------------------------------------- running the steps


@dataclass
class Step:
    name: str
    day: str
    args: list[str]  # after ``medaudit``; {db} {batch} {rules} filled in

    def argv(self, db: Path, batch: Path) -> list[str]:
        return [a.format(db=db, batch=batch, rules=REPO / "rules", out=workbook(db)) for a in self.args]


def workbook(db: Path) -> Path:
    """Where finalize writes the statement workbook (扣款单) for the database ``db``."""
    return db.with_name(f"{db.stem}_扣款单_{PERIOD}.xlsx")


def workbook_statements(path: Path) -> list[tuple] | None:
    """The statements in the workbook's 扣款单 sheet (None: there is no workbook)."""
    if not path.exists():
        return None
    import openpyxl

    wb = openpyxl.load_workbook(path, read_only=True)  # fails on a half-written file
    try:
        rows = list(wb["扣款单"].iter_rows(min_row=2, values_only=True))
    finally:
        wb.close()
    # 机构 is shown as "名称 (code)"; the numbers are number cells
    return [(r[0], re.sub(r"^.* \((.+)\)$", r"\1", r[1]), r[2], r[3], r[6], r[7], f"{float(r[8]):.2f}") for r in rows]


STEPS = [
    Step("load", SCREEN_DAY, ["load", "{batch}", "--db", "{db}"]),
    Step("screen", SCREEN_DAY, ["screen", "{db}", "--rules", "{rules}"]),
    Step("finalize", FINAL_DAY, ["deduct", "finalize", "--period", PERIOD, "--out", "{out}", "--db", "{db}"]),
]


def run_inprocess(monkeypatch, day: str, argv: list[str]) -> str:
    set_wall_clock(monkeypatch, day)
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == 0, f"medaudit {' '.join(argv)}:\n{r.output}\n{r.exception!r}"
    return r.output


def decisions(monkeypatch, db: Path) -> None:
    """Between screen and finalize: confirm part of one suspect of the period, dismiss another
    (so a confirmed suspect with a scaled claim is in the statement too)."""
    con = duckdb.connect(str(db))
    try:
        sus = [
            r[0]
            for r in con.execute(
                """SELECT f.finding_id FROM findings f WHERE f.period = ? AND f.status = 'pending_review'
               AND f.claimed_amt >= 1 ORDER BY f.finding_id LIMIT 2""",
                [PERIOD],
            ).fetchall()
        ]
        amount = con.execute("SELECT claimed_amt FROM findings WHERE finding_id = ?", [sus[0]]).fetchall()[0][0]
    finally:
        con.close()
    assert len(sus) == 2
    run_inprocess(
        monkeypatch,
        SCREEN_DAY,
        [
            "review",
            "decide",
            sus[0],
            "--decision",
            "confirm",
            "--by",
            "审核员 李",
            "--amount",
            str(amount - amount // 3),
            "--db",
            str(db),
        ],
    )
    run_inprocess(
        monkeypatch,
        SCREEN_DAY,
        [
            "review",
            "decide",
            sus[1],
            "--decision",
            "dismiss",
            "--by",
            "审核员 李",
            "--reason",
            "病历记载合理",
            "--db",
            str(db),
        ],
    )


def env_for(day: str) -> dict:
    return {**os.environ, "COLUMNS": "160"}


#: the CLI in a child process whose computer clock says the step's day: the test-only switch
#: lives here (production code reads the real clock; nothing in the environment moves it)
_CHILD = "import sys; from medaudit.hospital_loop import lifecycle; lifecycle.wall_now = lifecycle.fixed_clock(sys.argv.pop(1)); from medaudit.cli import app; sys.argv[0] = 'medaudit'; app()"


def cli_argv(day: str, argv: list[str]) -> list[str]:
    return [sys.executable, "-c", _CHILD, day, *argv]


def has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (a look at /proc/PID/fd; no hook in the product)."""
    target = str(path)
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False


def wal(db: Path) -> Path:
    return db.with_name(db.name + ".wal")


@dataclass
class Timing:
    opened: float  # seconds from spawn until the process had the database open
    total: float  # seconds from spawn until it exited
    wal_max: int  # the largest the write-ahead log grew (bytes): the COMMIT writes most of it


def size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return -1


def stamp(p: Path) -> tuple[int, int]:
    """Size and modification time: they change when the database file is written."""
    try:
        st = p.stat()
        return st.st_size, st.st_mtime_ns
    except OSError:
        return -1, 0


def run_timed(step: Step, db: Path, batch: Path) -> Timing:
    """The step, uninterrupted, in its own process: when it opened the database and when it ended."""
    t0 = time.perf_counter()
    p = subprocess.Popen(
        cli_argv(step.day, step.argv(db, batch)),
        env=env_for(step.day),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    opened, wal_max = None, 0
    while p.poll() is None:
        if opened is None and has_open(p.pid, db):
            opened = time.perf_counter() - t0
        wal_max = max(wal_max, size(wal(db)))
        time.sleep(0.001)
    out = p.stdout.read().decode(errors="replace")
    total = time.perf_counter() - t0
    assert p.returncode == 0, out
    assert wal_max > 0, f"{step.name} wrote no write-ahead log that was seen"
    return Timing(opened if opened is not None else total, total, wal_max)


@dataclass
class Kill:
    step: str
    kind: str
    delay: float  # seconds after the trigger (database open, or the WAL reaching a size)
    killed: bool = False  # False: the step ended before the kill
    phase: str = ""  # what the files showed at the kill (see kill_during)
    landed: str = ""  # before / after: the state found when the database was opened again


def kill_during(step: Step, db: Path, batch: Path, kill: Kill, wal_at: int, wal_max: int) -> None:
    """Run the step in its own process and SIGKILL it ``kill.delay`` seconds after the trigger:
    the process has the database open; (kind ``commit``) the write-ahead log has reached
    ``wal_at`` bytes; (kind ``checkpoint``) the database file is written while the log is
    there and complete. Sets ``kill.killed`` (False: it finished first) and ``kill.phase``, what the files
    showed just before the kill: ``work`` (no more log than the command's start writes),
    ``log`` (the COMMIT's log written or being written), ``checkpoint`` (the database file was
    written after the log was complete) or ``closed`` (the complete log is gone: checkpointed)."""
    p = subprocess.Popen(
        cli_argv(step.day, step.argv(db, batch)),
        env=env_for(step.day),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    logged: list = []  # the database file as it was when the COMMIT's log was complete

    def watch() -> None:
        if not logged and size(wal(db)) >= wal_max * 0.95:
            logged.append(stamp(db))

    def checkpointing() -> bool:
        return bool(logged) and stamp(db) != logged[0]

    try:
        trigger = {
            "commit": lambda: size(wal(db)) >= wal_at,
            "checkpoint": checkpointing,
        }.get(kill.kind, lambda: has_open(p.pid, db))
        while p.poll() is None and not trigger():
            watch()
            time.sleep(0.0005)
        deadline = time.perf_counter() + kill.delay
        while p.poll() is None and time.perf_counter() < deadline:
            watch()
            time.sleep(0.0005)
        log = size(wal(db))
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            kill.killed = True
            kill.phase = (
                "closed"
                if logged and log < 0
                else "checkpoint"
                if checkpointing()
                else "log"
                if log > wal_max // 20
                else "work"
            )
            return
        assert p.returncode == 0, f"medaudit {step.name} failed before it was killed (exit {p.returncode})"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def kill_plan(step: Step, timing: Timing, n: int) -> list[tuple[str, float, int]]:
    """n seeded kill points (kind, delay, WAL size): in the early, middle and late thirds of the
    step's measured work; at the COMMIT: while the log is written (a random part of its size in
    the uninterrupted run) and up to 50 ms later; and in the checkpoint that copies the log
    into the database file."""
    rng = random.Random(f"{SEED}:{step.name}")
    work = max(timing.total - timing.opened, 0.05)
    plan = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        if kind == "commit":
            plan.append((kind, rng.uniform(0, 0.05), max(1, int(timing.wal_max * rng.uniform(0.05, 1.0)))))
        elif kind == "checkpoint":
            plan.append((kind, rng.uniform(0, 0.03), 0))
        else:
            third = ("early", "middle", "late").index(kind)
            plan.append((kind, work * rng.uniform(third / 3, (third + 1) / 3), 0))
    return plan


# ---------------------------------------------------------------------------- the reference


@dataclass
class Reference:
    batch: Path
    before: dict[str, Path]  # step -> database copy as it is before the step (None: no database yet)
    after: dict[str, dict]  # step -> snapshot after the step
    before_snap: dict[str, dict]
    final: dict
    timing: dict[str, Timing]
    statements: list[tuple]  # the statement workbook finalize wrote


def copy_db(src: Path | None, dst: Path) -> None:
    for p in (dst, wal(dst), workbook(dst)):
        p.unlink(missing_ok=True)
    if src is not None:
        shutil.copyfile(src, dst)
        if wal(src).exists():
            shutil.copyfile(wal(src), wal(dst))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    """An uninterrupted run through the real command, each step in its own process, timed."""
    tmp = tmp_path_factory.mktemp("crash_ref")
    batch = tmp / "batch"
    generate(batch, visits=VISITS, seed=11)
    db = tmp / "ref.duckdb"
    before: dict[str, Path | None] = {}
    before_snap, after, timing = {}, {}, {}
    mp = pytest.MonkeyPatch()
    try:
        for step in STEPS:
            if step.name == "load":
                before[step.name] = None
                empty = tmp / "empty.duckdb"
                from medaudit import db as dbm

                dbm.connect(empty).close()
                before_snap[step.name] = snapshot(empty)
            else:
                if step.name == "finalize":
                    decisions(mp, db)
                saved = tmp / f"before_{step.name}.duckdb"
                copy_db(db, saved)
                before[step.name] = saved
                before_snap[step.name] = snapshot(saved)
            timing[step.name] = run_timed(step, db, batch)
            after[step.name] = snapshot(db)
            assert doubled(db) == {}
    finally:
        mp.undo()
    ref = Reference(batch, before, after, before_snap, after["finalize"], timing, workbook_statements(workbook(db)))
    # the reference did real work at every step
    assert ref.final["load_log rows"] and len(ref.final["load_log rows"]) == 1
    assert ref.final["statements"] and ref.final["findings"][0] > 100
    assert any(r[0] == "expired" for r in ref.final["findings totals"])
    assert ref.statements and ref.statements == [
        (r[0], r[2], r[1], r[3], r[4], r[5], f"{r[6]:.2f}") for r in ref.final["statements"]
    ]
    return ref


def following(monkeypatch, step: str, db: Path, batch: Path) -> None:
    names = [s.name for s in STEPS]
    for s in STEPS[names.index(step) + 1 :]:
        if s.name == "finalize":
            decisions(monkeypatch, db)
        run_inprocess(monkeypatch, s.day, s.argv(db, batch))


def screened_again(snap: dict) -> dict:
    """``snap`` with one more screening run that had nothing to screen (what a re-run of a screen
    that had committed before the kill leaves: ``screen`` screens what new batches touch, and
    there is none, so the run is recorded with no hit and touches no finding)."""
    runs = snap["screen runs"]
    return {**snap, "screen runs": runs + [runs[-1][:3] + (0, 0)], "findings seen by the last run": [(0,)]}


def diff(a: dict, b: dict) -> dict:
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="kill points are timed from /proc/PID/fd (Linux)")
@pytest.mark.parametrize("step", [s.name for s in STEPS])
def test_kill_9_then_run_again_equals_an_uninterrupted_run(step, reference, tmp_path, monkeypatch):
    s = next(x for x in STEPS if x.name == step)
    db = tmp_path / "crash.duckdb"
    kills = []
    t0 = time.perf_counter()
    for i, (kind, delay, wal_at) in enumerate(kill_plan(s, reference.timing[step], RUNS)):
        copy_db(reference.before[step], db)
        k = Kill(step, kind, delay)
        kill_during(s, db, reference.batch, k, wal_at, reference.timing[step].wal_max)
        # 1-2. it opens, and holds the state before or after the step, nothing in between
        found = snapshot(db)
        if found == reference.before_snap[step]:
            k.landed = "before"
        elif found == reference.after[step]:
            k.landed = "after"
        else:
            pytest.fail(
                f"kill {i} ({kind}+{delay:.3f}s, {k.phase}) left {step} half-done; differs from the state after the step in: "
                f"{diff(found, reference.after[step])}"
            )
        kills.append(k)
        # a workbook is whole or not there (never a half-written 扣款单)
        assert workbook_statements(workbook(db)) in (None, reference.statements)
        # 3. run the step again: the same as the uninterrupted step, to the cent (a screen that
        # had committed runs once more and finds nothing new)
        run_inprocess(monkeypatch, s.day, s.argv(db, reference.batch))
        again = step == "screen" and k.landed == "after"
        expect = screened_again(reference.after[step]) if again else reference.after[step]
        assert doubled(db) == {}, f"kill {i} ({kind}, {delay:.3f}s)"
        assert snapshot(db) == expect, diff(snapshot(db), expect)
        if step == "finalize":  # the clerk has the statement workbook, also after a kill
            assert workbook_statements(workbook(db)) == reference.statements, (
                f"kill {i} ({kind}): {k.phase}->{k.landed}"
            )
        # 4. and the rest of the loop
        if i == 0 or FULL:
            following(monkeypatch, step, db, reference.batch)
            assert doubled(db) == {}
            expect = screened_again(reference.final) if again else reference.final
            end = snapshot(db)
            assert end == expect, diff(end, expect)
            assert workbook_statements(workbook(db)) == reference.statements
    t = reference.timing[step]
    print(
        f"\n{step}: opened db at {t.opened:.2f}s, ended at {t.total:.2f}s, WAL up to {t.wal_max:,} bytes; {len(kills)} kills in "
        f"{time.perf_counter() - t0:.1f}s: "
        + ", ".join(
            f"{k.kind}+{k.delay:.3f}s:{k.phase}->{k.landed}" if k.killed else f"{k.kind}+{k.delay:.3f}s:finished"
            for k in kills
        )
    )


# ---------------------------------------------------------------------------- without a kill


def test_finalize_run_again_after_its_commit_still_writes_the_workbook(tmp_path, monkeypatch):
    """What a kill between finalize's COMMIT and its workbook leaves, made without a kill: the
    statements are in the database and there is no workbook. Running finalize again writes
    nothing new and still gives the clerk the workbook of those statements; a failed write
    leaves no file (and no temporary one)."""
    from medaudit.hospital_loop import deduct
    from test_lifecycle import loop_db

    loop_db(tmp_path, monkeypatch).close()
    dbfile, out = tmp_path / "loop.duckdb", tmp_path / "扣款单.xlsx"
    run_inprocess(monkeypatch, "2026-04-16", ["deduct", "finalize", "--period", "2026-03", "--db", str(dbfile)])
    con = duckdb.connect(str(dbfile))
    first = con.execute("SELECT statement_id, fixmedins_code, total FROM deduction_statements ORDER BY 1").fetchall()
    con.close()
    assert first and not out.exists()
    said = run_inprocess(
        monkeypatch, "2026-04-17", ["deduct", "finalize", "--period", "2026-03", "--out", str(out), "--db", str(dbfile)]
    )
    assert "Nothing new stands" in said and "written to" in " ".join(said.split())
    assert [(int(r[0]), r[1], f"{float(r[6]):.2f}") for r in workbook_statements(out)] == [
        (sid, inst, f"{total:.2f}") for sid, inst, total in first
    ]

    out.unlink()

    import xlsxwriter

    def broken(self):  # the disk fills while the workbook is being written
        Path(self.filename).write_bytes(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(xlsxwriter.Workbook, "close", broken)
    con = duckdb.connect(str(dbfile))
    with pytest.raises(OSError):
        deduct.write_statement_xlsx(con, [first[0][0]], out)
    con.close()
    assert list(tmp_path.glob("*扣款单*")) == [] and list(tmp_path.glob(".*.tmp")) == []
