"""``medaudit report``: the deduction report (扣款依据报表) of one institution and month."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from .. import db as dbm
from ..hospital_loop import report as rep
from ..clihelp import check_period

console = Console()


def report(
    institution: str = typer.Option(..., "--institution", help="institution code (fixmedins_code)"),
    period: str = typer.Option(..., "--period", help="settlement month YYYY-MM", callback=check_period),
    out_dir: Path = typer.Option(Path("."), "--out-dir", help="folder for the xlsx and the HTML page"),
    db: Path = typer.Option(dbm.DEFAULT_DB, "--db", help="DuckDB database file (made by load or screen)"),
) -> None:
    """Write the deduction report as xlsx and a self-contained HTML page (personal data masked)."""
    con = dbm.open_existing(db)
    xlsx, page, d = rep.build(con, institution, period, out_dir)
    t = d.totals
    console.print(
        f"{institution} {period}: {t['n']:,} findings, flagged {t['flagged']:,.2f}, deduction {t['deduction']:,.2f} "
        f"(final {t['final']:,.2f}), at risk in review {t['at_risk']:,.2f}"
    )
    if not t["n"]:
        known = con.execute(
            "SELECT DISTINCT fixmedins_code FROM findings WHERE period = ? AND stage = 'post_hoc' ORDER BY 1", [period]
        ).fetchall()
        console.print(
            f"[yellow]note:[/] no findings for {institution} in {period}"
            + (f" (institutions with findings that month: {', '.join(k[0] for k in known[:20])})" if known else "")
        )
    console.print(f"written {xlsx}\nwritten {page}")


def register(root: typer.Typer) -> None:
    root.command("report")(report)
