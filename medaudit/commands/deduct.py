"""``medaudit deduct``: final deduction statements (扣款单)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from .. import db as dbm
from ..hospital_loop import deduct as ded, lifecycle
from ..clihelp import check_period, fail

console = Console()
err = Console(stderr=True)
DbOption = typer.Option(dbm.DEFAULT_DB, "--db", help="DuckDB database file (made by load or screen)")

app = typer.Typer(
    help="Final deductions: write the month's deduction statement from the findings that stand.", no_args_is_help=True
)


@app.command("finalize")
def finalize(
    period: str = typer.Option(..., "--period", help="settlement month YYYY-MM", callback=check_period),
    institution: Optional[str] = typer.Option(None, "--institution", help="only this institution"),
    by: str = typer.Option("medaudit", "--by", help="who finalizes"),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        help="also write the new statements to this xlsx (when nothing is "
        "new: those of the period's last finalize, e.g. after an interrupted run)",
    ),
    as_of: Optional[str] = typer.Option(
        None,
        "--as-of",
        help="judge what stands on this day YYYY-MM-DD (today or earlier, e.g. the month's cut-off): "
        "windows closed by then expire, 复议 windows still open then keep their findings out; "
        "recorded in the statement and the audit log beside the real time",
    ),
    db: Path = DbOption,
) -> None:
    """Write the deduction statement: upheld and expired findings, each line deducted once. Safe to run again."""
    clock = None
    if as_of is not None:
        try:
            clock = lifecycle.parse_as_of(as_of)
        except lifecycle.LifecycleError as e:
            fail(str(e))
    con = dbm.open_existing(db)
    try:
        res = ded.finalize(con, period, institution, by=by, clock=clock)
    except ded.DeductError as e:
        fail(str(e))
    if clock is not None:
        console.print(f"judged as of {clock().date()} (--as-of; today is {lifecycle.wall_now().date()})")
    if res.expired_now:
        console.print(f"{res.expired_now:,} findings expired (their appeal window closed).")
    if not res.statements:
        console.print(
            f"Nothing new stands for {period}{' at ' + institution if institution else ''}; no statement written."
        )
        # a run killed after its COMMIT and before its workbook: running it again still gives the clerk the file
        last = ded.last_run_statements(con, period, institution) if out else []
        if last and out:
            ded.write_statement_xlsx(con, last, out)
            console.print(f"The statements of the last finalize ({', '.join(map(str, last))}) written to {out}")
    else:
        t = Table(title=f"Deduction statements {period}")
        for c in ("statement", "institution", "no.", "findings", "lines", "total 扣款"):
            t.add_column(c, justify="right" if c in ("findings", "lines", "total 扣款", "no.") else "left")
        for s in res.statements:
            t.add_row(
                str(s.statement_id), s.institution, str(s.seq), f"{s.n_findings:,}", f"{s.n_lines:,}", f"{s.total:,.2f}"
            )
        console.print(t)
        if out:
            ded.write_statement_xlsx(con, [s.statement_id for s in res.statements], out)
            console.print(f"written to {out}")
    if res.held:
        console.print(
            f"{len(res.held):,} standing findings wait for another finding on the same line, e.g. "
            f"{res.held[0][0][:12]}: {res.held[0][1]}"
        )
    if res.not_final:
        console.print(
            "Not final yet: " + ", ".join(f"{lifecycle.status_label(k)} {v:,}" for k, v in res.not_final.items()),
            highlight=False,
        )


@app.command("show")
def show(
    period: Optional[str] = typer.Option(
        None, "--period", help="only this settlement month YYYY-MM", callback=check_period
    ),
    institution: Optional[str] = typer.Option(None, "--institution"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the statements to this xlsx"),
    db: Path = DbOption,
) -> None:
    """List the deduction statements and check they reconcile with the findings."""
    con = dbm.open_existing(db)
    sts = ded.statements(con, period, institution)
    t = Table(title="Deduction statements")
    for c in ("statement", "period", "institution", "no.", "findings", "lines", "total 扣款"):
        t.add_column(c)
    for s in sts:
        t.add_row(
            str(s.statement_id),
            s.period,
            s.institution,
            str(s.seq),
            f"{s.n_findings:,}",
            f"{s.n_lines:,}",
            f"{s.total:,.2f}",
        )
    console.print(t)
    problems = ded.reconcile(con)
    console.print(
        "Reconciled with the findings table to the cent."
        if not problems
        else "[red]Does not reconcile:[/] " + "; ".join(problems)
    )
    if out and sts:
        ded.write_statement_xlsx(con, [s.statement_id for s in sts], out)
        console.print(f"written to {out}")
    if problems:
        raise typer.Exit(1)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="deduct")
