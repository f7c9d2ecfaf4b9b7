"""``medaudit watch``: the watchlist (重点监控)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .. import db as dbm
from ..clihelp import compact_table, fail
from ..hospital_loop import lifecycle
from ..supervision import store, watch as wt

console = Console()
err = Console(stderr=True)
DbOption = typer.Option(dbm.DEFAULT_DB, "--db", help="DuckDB database file (made by load or screen)")

app = typer.Typer(
    help="The watchlist (重点监控): entities enter by thresholds or by hand and leave after a clean period.",
    no_args_is_help=True,
)


def _day(as_of: Optional[str]):
    if as_of is None:
        return lifecycle.wall_now().date(), None
    try:
        d = lifecycle.parse_as_of(as_of).when.date()
    except lifecycle.LifecycleError as e:
        fail(str(e))
    return d, d


@app.command("update")
def update(
    by: str = typer.Option("medaudit", "--by", help="who runs it (audit log)"),
    as_of: Optional[str] = typer.Option(
        None, "--as-of", help="judge on this day YYYY-MM-DD (today or earlier; logged)"
    ),
    db: Path = DbOption,
) -> None:
    """Apply the thresholds: entities meeting one enter, automatic entries clean for long enough leave."""
    on, as_of_day = _day(as_of)
    con = dbm.open_existing(db)
    r = wt.update(con, on, by, as_of_day)
    for ent, why in r.entered:
        console.print(f"enters 列入重点监控 {ent}: {why}", highlight=False, soft_wrap=True)
    for ent, why in r.left:
        console.print(f"leaves 移出重点监控 {ent}: {why}", highlight=False, soft_wrap=True)
    if not r.entered and not r.left:
        console.print(f"No change on {on}.")


@app.command("add")
def add(
    entity: str = typer.Argument(..., metavar="ENTITY", help="H001 (institution), H001/D01 (doctor) or person:P1"),
    reason: str = typer.Option(..., "--reason", help="why (audit log)"),
    by: str = typer.Option(..., "--by", help="who"),
    db: Path = DbOption,
) -> None:
    """Put an entity under watch by hand (it leaves by hand only)."""
    con = dbm.open_existing(db)
    try:
        e = wt.add(con, entity, lifecycle.wall_now().date(), by, reason)
    except store.SupervisionError as x:
        fail(str(x))
    console.print(f"{e.key} is watched from today.", highlight=False)


@app.command("remove")
def remove(
    entity: str = typer.Argument(..., metavar="ENTITY", help="H001, H001/D01 or person:P1"),
    reason: str = typer.Option(..., "--reason", help="why (audit log)"),
    by: str = typer.Option(..., "--by", help="who"),
    db: Path = DbOption,
) -> None:
    """Take an entity off the watchlist (an automatic entry re-enters at the next update if it still meets a threshold)."""
    con = dbm.open_existing(db)
    try:
        e = wt.remove(con, entity, lifecycle.wall_now().date(), by, reason)
    except store.SupervisionError as x:
        fail(str(x))
    console.print(f"{e.key} is no longer watched.", highlight=False)


@app.command("list")
def list_(
    all_: bool = typer.Option(False, "--all", help="also entries that left"),
    db: Path = DbOption,
) -> None:
    """The watched entities (how and why they entered; with --all also when and why they left)."""
    con = dbm.open_existing(db)
    rows = wt.listing(con, all_)
    if not rows:
        console.print("Nobody is watched." if not all_ else "The watchlist has never had an entry.")
        return
    t = compact_table("重点监控 watchlist")
    for c in ("entity", "kind", "how", "since", "why", "by") + (("left", "why left") if all_ else ()):
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(
            r["entity"],
            r["entity_kind"],
            r["how"],
            str(r["entered_on"]),
            r["reason"],
            r["actor"] or "",
            *((str(r["left_on"] or ""), r["left_reason"] or "") if all_ else ()),
        )
    console.print(t)


@app.command("settings")
def settings_(
    points_threshold: Optional[int] = typer.Option(
        None, "--points-threshold", help="credit points that put an entity under watch"
    ),
    points_window_days: Optional[int] = typer.Option(None, "--points-window-days", help="over the last N days"),
    outlier_months: Optional[int] = typer.Option(None, "--outlier-months", help="peer_outlier findings in N months..."),
    outlier_window: Optional[int] = typer.Option(None, "--outlier-window", help="...of the last M months"),
    clean_days: Optional[int] = typer.Option(
        None, "--clean-days", help="days without a trigger before an automatic entry leaves"
    ),
    by: str = typer.Option("medaudit", "--by", help="who (audit log)"),
    reason: str = typer.Option("", "--reason", help="why (required to change)"),
    db: Path = DbOption,
) -> None:
    """Show (or change, logged) the watchlist's thresholds."""
    con = dbm.open_existing(db)
    values = {
        k: v
        for k, v in (
            ("points_threshold", points_threshold),
            ("points_window_days", points_window_days),
            ("outlier_months", outlier_months),
            ("outlier_window", outlier_window),
            ("clean_days", clean_days),
        )
        if v is not None
    }
    if values:
        try:
            wt.set_settings(con, values, by, reason)
        except store.SupervisionError as x:
            fail(str(x))
    for k, v in wt.settings(con).items():
        console.print(f"{k} = {v}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="watch")
