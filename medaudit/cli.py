"""The ``medaudit`` command.

The core commands (load, screen, findings) live here; each further area (rules, sample,
appeals, reports, the pre-alert service) is a module in :mod:`medaudit.commands` with a
``register(app)`` function, discovered at start, so areas grow without touching this file.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from . import db as dbm
from . import resources
from .engine import screen as run_screen
from .library import RuleLibraryError, load_library
from .loader import LoadError, LoadResult, load_batch

class _Group(TyperGroup):
    """The root command: errors every command may meet are handled here, once."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except dbm.DatabaseInUse as e:
            # one line, no traceback: who holds the database and what to do
            typer.echo(f"medaudit: {e}", err=True)
            raise typer.Exit(3) from None


app = typer.Typer(
    cls=_Group,
    help="medaudit: screen medical-insurance claims with a rule library, explain and settle deductions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)

DbOption = typer.Option(dbm.DEFAULT_DB, "--db", help="DuckDB database file (created when missing)")


def fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


@app.callback()
def main(
    memory_limit: Optional[str] = typer.Option(
        None, "--memory-limit", help="DuckDB memory limit for every database this command opens (e.g. 6GB); "
        "what does not fit is spilled to --temp-dir. Default: \\[duckdb] memory_limit in the config file, "
        "else a quarter of the machine's memory"),
    temp_dir: Optional[Path] = typer.Option(
        None, "--temp-dir", help="folder DuckDB spills to. Default: \\[duckdb] temp_dir in the config file, "
        "else <database file>.tmp"),
    config: Optional[Path] = typer.Option(
        None, "--config", help=f"TOML config file with a \\[duckdb] table (memory_limit, temp_dir). "
        f"Default: {resources.CONFIG_FILE} in the working folder, when there"),
) -> None:
    """medaudit: screen medical-insurance claims with a rule library, explain and settle deductions."""
    try:
        resources.configure(memory_limit, temp_dir, config)
    except resources.ResourceError as e:
        fail(str(e))


def print_load(result: LoadResult, batch: Path) -> None:
    from rich.markup import escape  # values and column names come from the files: never markup

    if result.already_loaded:
        console.print(f"{escape(str(batch))}: already loaded as batch {result.batch_id} (same content); nothing added.")
        return
    t = Table(title=f"Loaded {escape(str(batch))} as batch {result.batch_id}")
    for c in ("table", "file", "read", "loaded", "rejected", "NFKC cells", "data quality"):
        t.add_column(c, justify="left" if c in ("table", "file") else "right")
    for s in result.tables:
        t.add_row(s.table, escape(s.file), f"{s.read:,}", f"{s.loaded:,}", f"[red]{s.rejected:,}[/]" if s.rejected else "0",
                  f"{s.normalised:,}", f"[yellow]{s.data_quality:,}[/]" if s.data_quality else "0")
    console.print(t)
    for s in result.tables:
        if s.ignored_columns:
            console.print(f"{escape(s.file)}: ignored columns (not in the data contract, not stored): "
                          + escape(", ".join(s.ignored_columns)))
    if any(s.normalised for s in result.tables):
        console.print("NFKC cells: values normalised to their plain form (full-width digits and letters -> ASCII).")
    if result.rejected is not None and result.rejected.height:
        shown = result.rejected.head(10)
        rt = Table(title=f"Rejected rows (first {shown.height} of {result.rejected.height} problems; all in table rejected_rows)")
        for c in ("file", "row", "reason"):
            rt.add_column(c)
        for r in shown.iter_rows(named=True):
            rt.add_row(escape(r["file"]), str(r["row_no"]), escape(r["reason"]))
        console.print(rt)
    if result.quality is not None and result.quality.height:
        shown = result.quality.head(10)
        qt = Table(title=f"Data quality (loaded; first {shown.height} of {result.quality.height}; all in table data_quality)")
        for c in ("file", "row", "reason"):
            qt.add_column(c)
        for r in shown.iter_rows(named=True):
            qt.add_row(escape(r["file"]), str(r["row_no"]), escape(r["reason"]))
        console.print(qt)


@app.command()
def load(
    batch: Path = typer.Argument(..., help="batch folder with mdtrt_d, setl_d, fee_list_d, ... (.csv, .parquet or .xlsx)"),
    db: Path = DbOption,
) -> None:
    """Load a batch folder into the database. Bad rows are set aside with file, row, column and reason."""
    con = dbm.connect(db)
    try:
        result = load_batch(batch, con)
    except LoadError as e:
        fail(f"{e}\nNothing was loaded.")
    print_load(result, batch)


def _screen_summary(con, run_id: int, stage: str) -> None:
    rows = con.execute(
        """
        SELECT rule_id, any_value(rule_name), any_value(rule_type), any_value(severity), count(*),
               sum(flagged_amt), sum(deduction_amt), sum(claimed_amt) FILTER (WHERE severity = 'suspect')
        FROM findings WHERE last_run = ? GROUP BY rule_id ORDER BY rule_id
        """,
        [run_id],
    ).fetchall()
    t = Table(title=f"Findings by rule ({stage})")
    t.add_column("rule", no_wrap=True)
    t.add_column("name (type)", overflow="fold", ratio=1)
    t.add_column("sev", no_wrap=True)
    for c in ("findings", "flagged 违规", "deduct 扣款", "at risk 待审"):
        t.add_column(c, justify="right", no_wrap=True)
    for r in rows:
        sev = "违规" if r[3] == "violation" else "可疑"
        t.add_row(r[0], f"{r[1]} [dim]({r[2]})[/]", sev, f"{r[4]:,}", f"{r[5]:,.2f}", f"{r[6]:,.2f}", f"{(r[7] or 0):,.2f}")
    console.print(t)
    by_inst = con.execute(
        """
        SELECT fixmedins_code, count(*), sum(flagged_amt), sum(deduction_amt)
        FROM findings WHERE last_run = ? GROUP BY 1 ORDER BY 4 DESC, 1
        """,
        [run_id],
    ).fetchall()
    t = Table(title="By institution")
    for c in ("institution", "findings", "flagged", "deduction"):
        t.add_column(c, justify="left" if c == "institution" else "right")
    for r in by_inst:
        t.add_row(r[0] or "", f"{r[1]:,}", f"{r[2]:,.2f}", f"{r[3]:,.2f}")
    console.print(t)
    by_sev = con.execute(
        "SELECT severity, count(*), sum(flagged_amt), sum(deduction_amt), sum(claimed_amt) FROM findings WHERE last_run = ? GROUP BY 1 ORDER BY 1",
        [run_id],
    ).fetchall()
    t = Table(title="By severity")
    for c in ("severity", "findings", "flagged", "deduction", "claimed"):
        t.add_column(c, justify="left" if c == "severity" else "right")
    for r in by_sev:
        t.add_row(r[0], f"{r[1]:,}", f"{r[2]:,.2f}", f"{r[3]:,.2f}", f"{r[4]:,.2f}")
    console.print(t)


@app.command()
def screen(
    target: Path = typer.Argument(..., help="a batch folder (loaded first) or a database file"),
    rules: Path = typer.Option(Path("rules"), "--rules", help="rule library folder or YAML file"),
    db: Path = DbOption,
    stage: str = typer.Option("post_hoc", "--stage", help="post_hoc (settled claims) or in_process (open stays)"),
) -> None:
    """Screen claims with the rule library; findings are stored in the database."""
    if stage not in ("post_hoc", "in_process"):
        fail(f"--stage must be post_hoc or in_process, got {stage!r} (pre-alert is `medaudit serve`)")
    try:
        library = load_library(rules)
    except RuleLibraryError as e:
        fail("the rule library has problems:\n" + "\n".join(e.problems))
    if target.is_dir():
        con = dbm.connect(db)
        try:
            print_load(load_batch(target, con), target)
        except LoadError as e:
            fail(f"{e}\nNothing was loaded or screened.")
    elif target.is_file():
        con = dbm.connect(target)
    else:
        fail(f"{target}: no such batch folder or database")
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total} rule types"),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        task = progress.add_task("screening", total=None)

        def on_type(name: str, i: int, n: int) -> None:
            progress.update(task, total=n, completed=i, description=f"screening {name}" if name else "settling deductions")

        result = run_screen(con, library, stage=stage, on_type=on_type)
    console.print(
        f"Run {result.run_id}: {result.n_lines:,} lines screened with {result.n_rules:,} rules in "
        f"{result.seconds_total:.1f}s; {result.n_new_findings:,} new findings."
    )
    _screen_summary(con, result.run_id, stage)


@app.command()
def findings(
    db: Path = DbOption,
    rule: Optional[str] = typer.Option(None, help="only this rule id"),
    institution: Optional[str] = typer.Option(None, help="only this institution code"),
    visit: Optional[str] = typer.Option(None, help="only this visit (mdtrt_id)"),
    person: Optional[str] = typer.Option(None, help="only this person (psn_no)"),
    limit: int = typer.Option(50, help="rows to show"),
) -> None:
    """List stored findings with their evidence (for ad-hoc investigation)."""
    con = dbm.connect(db, read_only=True)
    where, args = ["TRUE"], []
    for col, val in (("rule_id", rule), ("fixmedins_code", institution), ("mdtrt_id", visit), ("psn_no", person)):
        if val:
            where.append(f"{col} = ?")
            args.append(val)
    rows = con.execute(
        f"""SELECT finding_id, rule_id, severity, status, fixmedins_code, mdtrt_id, flagged_amt, deduction_amt, evidence
            FROM findings WHERE {' AND '.join(where)} ORDER BY fixmedins_code, mdtrt_id, rule_id LIMIT {int(limit)}""",
        args,
    ).fetchall()
    # the doctor's pre-alert answer on the same rule, visit and item (medaudit/prealert/store.py)
    from .prealert import store as prealert_store

    pre = prealert_store.evidence_for(con, [r[0] for r in rows])
    t = Table(show_lines=True)
    for c in ("finding", "rule", "severity", "status", "inst", "visit", "flagged", "deduction", "evidence"):
        t.add_column(c, overflow="fold")
    for r in rows:
        ev = r[8] + (f"\n{pre[r[0]]}" if r[0] in pre else "")
        t.add_row(r[0][:10], r[1], r[2], r[3], r[4] or "", r[5] or "", f"{r[6]:,.2f}", f"{r[7]:,.2f}", ev)
    console.print(t)


def _register_command_modules() -> None:
    from . import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        register = getattr(module, "register", None)
        if register:
            register(app)


_register_command_modules()

if __name__ == "__main__":
    app()
