"""``medaudit credit``: credit files (信用档案) of institutions, doctors and persons."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer
from rich.console import Console

from .. import db as dbm, names
from ..clihelp import compact_table, fail
from ..hospital_loop import lifecycle
from ..supervision import credit as cr, store, watch as wt

console = Console()
err = Console(stderr=True)
DbOption = typer.Option(dbm.DEFAULT_DB, "--db", help="DuckDB database file (made by load or screen)")

app = typer.Typer(
    help="Credit files (信用档案): confirmed violations of institutions, doctors and persons, with points.",
    no_args_is_help=True,
)


@app.command("show")
def show(
    entity: str = typer.Argument(..., metavar="ENTITY", help="H001 (institution), H001/D01 (doctor) or person:P1"),
    window_days: int = typer.Option(365, "--window-days", help="also sum the points of the last N days"),
    db: Path = DbOption,
) -> None:
    """Print an entity's credit file: every entry (date, nature, amount, points, source, who wrote it) and its watch status."""
    try:
        e = cr.parse_entity(entity)
    except store.SupervisionError as x:
        fail(str(x))
    if window_days < 1:
        fail(f"--window-days must be 1 or more, got {window_days}")
    con = dbm.open_existing(db)
    f = cr.show(con, e, lifecycle.wall_now().date(), window_days)
    nm = names.Names(con)
    label = {
        "institution": lambda: nm.institution(e.code),
        "doctor": lambda: f"{nm.institution(e.institution)} {nm.doctor(e.institution, e.code)}",
        "person": lambda: e.key,
    }[e.kind]()
    console.print(
        f"信用档案 {label} ({e.kind}): {len(f.entries):,} entries, {f.total_points} points "
        f"({f.points_window} in the last {window_days} days), deducted {f.amount:,.2f}",
        highlight=False,
    )
    w = wt.status(con, e.key)
    console.print(
        f"重点监控: {'yes, since ' + str(w['entered_on']) + ' (' + w['how'] + '): ' + w['reason'] if w else 'no'}",
        highlight=False,
        soft_wrap=True,
    )
    if f.entries:
        t = compact_table()
        for c in ("date", "period", "nature", "amount", "points", "source", "finding", "recorded by"):
            t.add_column(c, justify="right" if c in ("amount", "points") else "left")
        for row in f.entries:
            t.add_row(
                str(row["entry_date"]),
                row["period"] or "",
                row["nature"],
                f"{row['amount']:,.2f}",
                str(row["points"]),
                f"扣款单 {row['source_id']}",
                row["finding_id"][:12],
                f"{row['actor']} {row['event_at']:%Y-%m-%d %H:%M}",
            )
        console.print(t)


@app.command("update")
def update(
    by: str = typer.Option(..., "--by", help="who records (audit log)"),
    reason: str = typer.Option("", "--reason", help="why (default: 扣款单确认的违规记入信用档案)"),
    db: Path = DbOption,
) -> None:
    """Record the violations of every final statement not in the files yet (deduct finalize does it for its own
    statements; this catches up statements written before). A finding is never counted twice."""
    con = dbm.open_existing(db)
    n = cr.update(con, by, reason)
    console.print(
        f"{n:,} credit entries written." if n else "Nothing new: every statement's violations are in the files."
    )


@app.command("points")
def points(
    set_: List[str] = typer.Option([], "--set", help="NATURE=POINTS for entries written from now on (repeatable)"),
    by: str = typer.Option("medaudit", "--by", help="who changes the table (audit log)"),
    reason: str = typer.Option("", "--reason", help="why (required with --set)"),
    db: Path = DbOption,
) -> None:
    """Show (or change, logged) the points per nature."""
    con = dbm.open_existing(db)
    for item in set_:
        nature, sep, val = item.partition("=")
        if not sep or not val.strip().isdigit():
            fail(f"--set {item!r}: write NATURE=POINTS, e.g. 虚构服务=12")
        try:
            cr.set_points(con, nature, int(val), by, reason)
        except store.SupervisionError as x:
            fail(str(x))
    t = compact_table("credit points per nature")
    t.add_column("nature")
    t.add_column("points", justify="right")
    for n, p in cr.points_table(con).items():
        t.add_row(n, str(p))
    console.print(t)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="credit")
