"""``medaudit review``: the bureau's side (decide an appeal or a suspect, list the queue)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import List, Literal, Optional

import typer
from rich.console import Console

from .. import db as dbm, money
from ..hospital_loop import lifecycle
from ..clihelp import check_period, print_finding
from ..clihelp import fail

console = Console()
err = Console(stderr=True)
DbOption = typer.Option(dbm.DEFAULT_DB, "--db", help="DuckDB database file (made by load or screen)")

app = typer.Typer(
    help="Review (复核): decide appeals and suspects, list what waits for a decision.", no_args_is_help=True
)

DECISIONS = {"uphold": "uphold", "overturn": "overturn", "confirm": "confirm", "dismiss": "dismiss"}


@app.command("decide")
def decide(
    finding: str = typer.Argument(..., help="finding id (or a unique prefix)"),
    decision: Literal["uphold", "overturn", "confirm", "dismiss"] = typer.Option(
        ...,
        "--decision",
        help="uphold 驳回申诉 or overturn 撤销扣款 (an appeal); confirm 确认疑点 or dismiss 排除疑点 (a suspect)",
    ),
    by: str = typer.Option(..., "--by", help="the reviewer"),
    reason: str = typer.Option("", "--reason", help="why (required except to confirm)"),
    attach: List[Path] = typer.Option([], "--attach", help="supporting file (repeatable); its SHA-256 is logged"),
    amount: Optional[str] = typer.Option(
        None, "--amount", help="confirm: deduct this many yuan (at most the amount at risk; rounded half-up to 0.01)"
    ),
    db: Path = DbOption,
) -> None:
    """Decide one finding: uphold/overturn an appeal, confirm/dismiss a suspect."""
    if decision not in DECISIONS:
        fail(f"--decision must be uphold, overturn, confirm or dismiss, got {decision!r}")
    decided: Decimal | None = None
    if amount is not None:
        try:
            decided = money.parse_amount(amount, "--amount")
        except money.AmountError as e:
            fail(str(e))
    con = dbm.open_existing(db)
    try:
        [(f, to)] = lifecycle.apply(
            con, finding, DECISIONS[decision], by, reason, lifecycle.attachment_records(attach), amount=decided
        )
    except lifecycle.LifecycleError as e:
        fail(str(e))
    amt = con.execute("SELECT deduction_amt FROM findings WHERE finding_id = ?", [f.finding_id]).fetchall()[0][0]
    console.print(
        f"{f.name()}: {lifecycle.status_label(f.status)} -> {lifecycle.status_label(to)}; deduction now {amt:,.2f}",
        highlight=False,
    )


@app.command("list")
def list_(
    status: str = typer.Option(
        "appealed,pending_review",
        "--status",
        help="comma-separated state codes: " + ", ".join(f"{code} {cn}" for code, cn in lifecycle.STATUS_CN.items()),
    ),
    institution: Optional[str] = typer.Option(None, "--institution"),
    period: Optional[str] = typer.Option(
        None, "--period", help="only this settlement month YYYY-MM", callback=check_period
    ),
    limit: int = typer.Option(100, "--limit"),
    watched: bool = typer.Option(
        False, "--watched", help="only findings of watched entities (重点监控); without it they come first, marked"
    ),
    db: Path = DbOption,
) -> None:
    """The review queue: findings waiting for a decision (appealed ones and suspects by default); findings of
    watched institutions, doctors and persons (重点监控) first."""
    states = [s.strip() for s in status.split(",") if s.strip()]
    unknown = [s for s in states if s not in lifecycle.STATUS_CN]
    if unknown or not states:
        fail(f"--status {status!r}: give states among {', '.join(lifecycle.STATUS_CN)}")
    con = dbm.open_existing(db)
    lifecycle.expire_due(con)
    rows = lifecycle.queue(
        con, states, institution=institution, period=period, limit=limit, watched_only=watched, watched_first=True
    )
    if not rows:
        console.print(
            f"Nothing{' of a watched entity' if watched else ''} waits for a decision "
            f"({', '.join(lifecycle.status_label(s) for s in states)}).",
            highlight=False,
        )
        return
    # one block a finding (readable at 80 columns): heading, the hospital's appeal reason, evidence
    for r in rows:
        print_finding(
            console,
            r | {"at_risk": r["claimed_amt"]},
            [
                f"重点监控 watched: {r['watched']}" if r["watched"] else "",
                f"申诉理由 appeal: {r['appeal_reason']}" if r["appeal_reason"] else "",
            ],
        )


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="review")
