"""``medaudit appeal``: the hospital's side of the loop (export, import, submit, history, settings)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .. import db as dbm
from ..hospital_loop import appeals, lifecycle
from ..clihelp import check_period, history_table
from ..clihelp import fail

console = Console()
err = Console(stderr=True)
DbOption = typer.Option(dbm.DEFAULT_DB, "--db", help="DuckDB database file (made by load or screen)")


app = typer.Typer(
    help="Appeals (申诉): export a hospital's open findings to Excel, import the filled workbook, "
    "file one appeal, show a finding's history, set the appeal windows.",
    no_args_is_help=True,
)


@app.command("export")
def export(
    institution: str = typer.Option(..., "--institution", help="institution code (fixmedins_code)"),
    period: str = typer.Option(..., "--period", help="settlement month YYYY-MM", callback=check_period),
    out: Optional[Path] = typer.Option(None, "--out", help="xlsx to write (default 申诉_<institution>_<period>.xlsx)"),
    db: Path = DbOption,
) -> None:
    """Write the institution's open findings of the month to an xlsx with an appeal-reason column."""
    con = dbm.open_existing(db)
    out = out or Path(f"申诉_{institution}_{period}.xlsx")
    res = appeals.export_workbook(con, institution, period, out)
    console.print(
        f"{res.path}: {res.n_findings:,} open findings of {institution} for {period}, "
        f"{res.n_appealable:,} of them open for appeal."
    )
    if not res.n_findings:
        known = con.execute(
            "SELECT DISTINCT fixmedins_code FROM findings WHERE period = ? AND stage = 'post_hoc' ORDER BY 1", [period]
        ).fetchall()
        if institution not in {k[0] for k in known}:
            console.print(
                f"[yellow]note:[/] {institution} has no findings in {period}"
                + (f" (institutions with findings that month: {', '.join(k[0] for k in known[:20])})" if known else "")
            )


@app.command("import")
def import_(
    file: Path = typer.Argument(..., help="the filled workbook"),
    by: str = typer.Option(..., "--by", help="who files the appeals (the hospital's contact)"),
    institution: Optional[str] = typer.Option(
        None,
        "--institution",
        help="the institution that sent the workbook (required; the workbook's own 机构编码 is not "
        "trusted): a workbook with any finding that is not this institution's is refused whole",
    ),
    receipt: Optional[Path] = typer.Option(None, "--receipt", help="also write a receipt (回执) xlsx for the hospital"),
    db: Path = DbOption,
) -> None:
    """File the appeals of a filled workbook; rows that cannot be filed are listed with the reason."""
    con = dbm.open_existing(db)
    try:
        res = appeals.import_workbook(con, file, by, institution)
    except appeals.WorkbookRefused as e:
        if receipt:
            appeals.write_receipt(e, file, receipt)
            err.print(f"receipt written to {receipt}", highlight=False)
        fail(str(e))
    except appeals.AppealFileError as e:
        fail(str(e))
    console.print(
        f"{file}: {len(res.filed):,} appeals filed for {res.institution}, {len(res.refused):,} rows refused, "
        f"{res.untouched:,} findings not appealed."
    )
    for rows, title, last in (
        (res.refused, "Refused rows (nothing was filed for them)", "reason"),
        (
            res.edited,
            "Bureau cells edited in the workbook (the exported values stand; listed in the receipt)",
            "changed",
        ),
    ):
        if rows:
            t = Table(title=title)
            for c in ("row", "finding", last):
                t.add_column(c, overflow="fold")
            for no, fid, text in rows:
                t.add_row(str(no), (fid or "")[:12], text)
            console.print(t)
    if receipt:
        appeals.write_receipt(res, file, receipt)
        console.print(f"receipt written to {receipt}")


@app.command("submit")
def submit(
    finding: str = typer.Argument(..., help="finding id (or a unique prefix)"),
    by: str = typer.Option(..., "--by", help="who appeals"),
    reason: str = typer.Option(..., "--reason", help="why the deduction is wrong"),
    attach: List[Path] = typer.Option([], "--attach", help="supporting file (repeatable); its SHA-256 is logged"),
    institution: Optional[str] = typer.Option(
        None, "--institution", help="refuse unless the finding is this institution's"
    ),
    db: Path = DbOption,
) -> None:
    """File one appeal (申诉, or 复议 of an upheld finding when enabled)."""
    con = dbm.open_existing(db)
    try:
        [(f, to)] = lifecycle.apply(
            con, finding, "appeal", by, reason, lifecycle.attachment_records(attach), institution=institution or None
        )
    except lifecycle.LifecycleError as e:
        fail(str(e))
    console.print(f"{f.name()}: {lifecycle.status_label(f.status)} -> {lifecycle.status_label(to)}", highlight=False)


@app.command("history")
def history(finding: str = typer.Argument(..., help="finding id (or a unique prefix)"), db: Path = DbOption) -> None:
    """The audit log of one finding: who moved it, when, why, with which attachments."""
    con = dbm.open_existing(db)
    try:
        f = lifecycle.resolve(con, finding)
    except lifecycle.LifecycleError as e:
        fail(str(e))
    console.print(Text(f"{f.name()}: {f.state()}"), overflow="fold")
    console.print(history_table(lifecycle.history(con, f.finding_id)))


@app.command("settings")
def settings_(
    window_days: Optional[int] = typer.Option(
        None, "--window-days", min=1, help="appeal window in working days (default 10)"
    ),
    second_appeal: Optional[bool] = typer.Option(
        None, "--second-appeal/--no-second-appeal", help="allow one second appeal (复议) of an upheld finding"
    ),
    second_window_days: Optional[int] = typer.Option(
        None, "--second-window-days", min=1, help="复议 window in working days"
    ),
    holidays: Optional[Path] = typer.Option(
        None,
        "--holidays",
        help="holiday file: one YYYY-MM-DD [name] a line; a name with 上班/补班 marks a make-up working day",
    ),
    db: Path = DbOption,
) -> None:
    """Show or change the appeal windows and the holiday calendar (set them before screening)."""
    changes = (window_days, second_appeal, second_window_days, holidays)
    # setting up a new database before its first screening is this command's job: a change may
    # create the file; only showing the settings needs an existing one
    con = dbm.connect(db) if any(v is not None for v in changes) else dbm.open_existing(db)
    try:
        if window_days is not None:
            lifecycle.set_setting(con, "window_days", window_days)
        if second_appeal is not None:
            lifecycle.set_setting(con, "second_appeal", "true" if second_appeal else "false")
        if second_window_days is not None:
            lifecycle.set_setting(con, "second_window_days", second_window_days)
        if holidays is not None:
            n = lifecycle.load_holidays(con, holidays)
            console.print(f"{holidays}: {n} dates loaded.")
    except (lifecycle.LifecycleError, OSError) as e:
        fail(str(e))
    s = lifecycle.settings(con)
    n_h, n_w = con.execute(
        "SELECT count(*) FILTER (WHERE NOT workday), count(*) FILTER (WHERE workday) FROM holidays"
    ).fetchall()[0]
    console.print(
        f"appeal window {s['window_days']} working days; second appeal (复议) "
        f"{'allowed, window ' + s['second_window_days'] + ' working days' if s['second_appeal'] == 'true' else 'not allowed'}; "
        f"calendar: {n_h} holidays, {n_w} make-up working days."
    )


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="appeal")
