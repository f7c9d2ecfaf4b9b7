"""The ``medaudit`` command.

The core commands (load, screen, findings) live here; each further area (rules, sample,
appeals, reports, the pre-alert service) is a module in :mod:`medaudit.commands` with a
``register(app)`` function, discovered at start, so areas grow without touching this file.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Literal, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.padding import Padding
from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from . import db as dbm
from . import resources
from .hospital_loop import lifecycle
from .engine import screen as run_screen
from .incremental import Scope, ScopeError
from .clihelp import compact_table, history_table, print_finding
from .library import RuleLibraryError, load_library
from .loader import LoadError, LoadResult, load_batch
from .clihelp import fail


class _Group(TyperGroup):
    """The root command: errors every command may meet are handled here, once."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except dbm.DatabaseInUse as e:
            # one line, no traceback: who holds the database and what to do
            typer.echo(f"medaudit: {e}", err=True)
            raise typer.Exit(3) from None
        except dbm.DatabaseMissing as e:
            # one line: only load, screen and serve create a database
            typer.echo(f"medaudit: {e}", err=True)
            raise typer.Exit(2) from None
        except dbm.DatabaseTooNew as e:
            typer.echo(f"medaudit: {e}", err=True)
            raise typer.Exit(2) from None


_TYPE_NAMES = {
    "str": "TEXT",
    "int": "INTEGER",
    "float": "FLOAT",
    "path": "PATH",
    "file": "FILE",
    "directory": "DIRECTORY",
    "int range": "INTEGER RANGE",
    "float range": "FLOAT RANGE",
    "datetime": "DATETIME",
    "uuid": "UUID",
    "decimal": "DECIMAL",
}


def _usual_type_label(self, ctx) -> str | None:
    """The type column of ``--help`` as typer and click have always shown it: TEXT, INTEGER,
    PATH, INTEGER RANGE, the choices [a|b]; nothing for a flag (this typer writes ``<str>``,
    ``<bool>`` on every option, ``--help`` included)."""
    if getattr(self, "is_flag", False) or getattr(self, "count", False):
        return None
    label = _typer_display_type(self, ctx)
    if not label:
        return label
    inner = label[1:-1] if label.startswith("<") and label.endswith(">") else label
    if inner == "bool":
        return None
    if inner.startswith("list[") and inner.endswith("]"):
        inner = inner[5:-1]
    if inner in _TYPE_NAMES:
        return _TYPE_NAMES[inner]
    if "|" in inner:  # the choices of a choice option
        return f"[{inner}]"
    return inner.upper()


# one place for the whole command tree (every sub-app's options are typer parameters)
import typer.core as _typer_core  # noqa: E402

_typer_display_type = _typer_core._TyperParameter.display_type
# deliberate: typer's own labels replaced for every parameter. The ignore must stay: typer makes
# its parameters itself (no class of ours to override in), mypy refuses any assignment to a method
# (method-assign), and the label is None for a flag where typer annotates str (assignment; its
# callers test for None)
_typer_core._TyperParameter.display_type = _usual_type_label  # type: ignore[method-assign,assignment]


def _usual_usage_name(self) -> str:
    """An argument in the usage line as usual: ``FILE`` when required, ``[DIR]`` when not (not ``{file}``)."""
    name = self.display_name_raw
    if not self.required and not name.startswith("["):
        name = f"[{name}]"
    return name + ("..." if self.nargs != 1 else "")


# the same patch for the usage line (the ignores stay for the same reason: methods replaced on
# typer's own classes; a property put where mypy sees a method is also an 'assignment')
_typer_core.TyperArgument._usage_display_name = _usual_usage_name  # type: ignore[method-assign]
# an argument is named FILE, FINDING (help, usage, "Missing argument 'FINDING'"), as click names it
_typer_core.TyperArgument.display_name_raw = property(  # type: ignore[method-assign,assignment]
    lambda self: self.metavar if self.metavar is not None else (self.name or "").upper()
)


app = typer.Typer(
    cls=_Group,
    # help as click writes it: plain text ("[name]" and "[duckdb]" are shown, not read as rich
    # markup), options stacked when long, nothing cut with … at 80 columns; every sub-app inherits it
    rich_markup_mode=None,
    help="medaudit: screen medical-insurance claims with a rule library, explain and settle deductions.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err = Console(stderr=True)

DbOption = typer.Option(dbm.DEFAULT_DB, "--db", help="DuckDB database file (created when missing)")
#: the database of a command that reads (or decides on) what load and screen stored: never created
ExistingDbOption = typer.Option(dbm.DEFAULT_DB, "--db", help="DuckDB database file (made by load or screen)")


@app.callback()
def main(
    memory_limit: Optional[str] = typer.Option(
        None,
        "--memory-limit",
        help="memory budget of this command's process (e.g. 6GB): DuckDB gets four fifths of it on every "
        "database it opens, the rest is left for what the process holds beside DuckDB; what does not fit "
        "is spilled to --temp-dir. Default: [duckdb] memory_limit in the config file, "
        "else a quarter of the machine's memory",
    ),
    temp_dir: Optional[Path] = typer.Option(
        None,
        "--temp-dir",
        help="folder DuckDB spills to. Default: [duckdb] temp_dir in the config file, else <database file>.tmp",
    ),
    config: Optional[Path] = typer.Option(
        None,
        "--config",
        help=f"TOML config file with a [duckdb] table (memory_limit, temp_dir). "
        f"Default: {resources.CONFIG_FILE} in the working folder, when there",
    ),
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
        t.add_row(
            s.table,
            escape(s.file),
            f"{s.read:,}",
            f"{s.loaded:,}",
            f"[red]{s.rejected:,}[/]" if s.rejected else "0",
            f"{s.normalised:,}",
            f"[yellow]{s.data_quality:,}[/]" if s.data_quality else "0",
        )
    console.print(t)
    for s in result.tables:
        if s.ignored_columns:
            console.print(
                f"{escape(s.file)}: ignored columns (not in the data contract, not stored): "
                + escape(", ".join(s.ignored_columns))
            )
    if any(s.normalised for s in result.tables):
        console.print("NFKC cells: values normalised to their plain form (full-width digits and letters -> ASCII).")
    if result.rejected is not None and result.rejected.height:
        _row_table(result.rejected, "Rejected rows (first {shown} of {total} problems; all in table rejected_rows)")
    if result.quality is not None and result.quality.height:
        _row_table(result.quality, "Data quality (loaded; first {shown} of {total}; all in table data_quality)")


def _row_table(rows, title: str, first: int = 10) -> None:
    """The first rows of a (file, row_no, reason) frame as a table; file-borne text escaped."""
    shown = rows.head(first)
    t = Table(title=title.format(shown=shown.height, total=rows.height))
    for c in ("file", "row", "reason"):
        t.add_column(c)
    for r in shown.iter_rows(named=True):
        t.add_row(escape(r["file"]), str(r["row_no"]), escape(r["reason"]))
    console.print(t)


@app.command()
def load(
    batch: Path = typer.Argument(
        ..., help="batch folder with mdtrt_d, setl_d, fee_list_d, ... (.csv, .parquet or .xlsx)"
    ),
    db: Path = DbOption,
) -> None:
    """Load a batch folder into the database. Bad rows are set aside with file, row, column and reason."""
    con = dbm.connect(db)
    try:
        result = load_batch(batch, con)
    except LoadError as e:
        fail(f"{e}\nNothing was loaded.")
    print_load(result, batch)


class _RuleTypesColumn(ProgressColumn):
    """``3/12 rule types`` once the count is known; nothing before (never ``0/None``)."""

    def render(self, task) -> Text:
        if task.total is None:
            return Text("")
        return Text(f"{int(task.completed)}/{int(task.total)} rule types")


#: at least this many columns for the rule's name (and type) in the summary; below, it is cut with …
_NAME_MIN = 8
#: the rule's type is shown beside its name when the terminal is at least this wide
_WIDE = 120


_table = compact_table


def _why_nothing_screened(con, stage: str) -> str:
    """One line: why a stage found no lines to screen in this database."""
    n_fee = con.execute("SELECT count(*) FROM fee_list_d").fetchall()[0][0]
    if not n_fee:
        return "the database holds no fee lines (fee_list_d): load a batch first (medaudit load BATCH)."
    # as the engine sees a line (medaudit/engine.py STAGE_FILTER): open when its stay has no end
    # time or no settlement; lines of a refunded settlement are never screened
    n_visits, n_open, n_refunded = con.execute(
        """SELECT count(*),
                  count(*) FILTER (WHERE v.endtime IS NULL OR NOT EXISTS (SELECT 1 FROM setl_d s WHERE s.mdtrt_id = v.mdtrt_id)),
                  count(*) FILTER (WHERE v.endtime IS NOT NULL
                                     AND EXISTS (SELECT 1 FROM setl_d s WHERE s.mdtrt_id = v.mdtrt_id)
                                     AND NOT EXISTS (SELECT 1 FROM setl_d s WHERE s.mdtrt_id = v.mdtrt_id
                                                     AND coalesce(s.refd_setl_flag, '0') <> '1'))
           FROM mdtrt_d v"""
    ).fetchall()[0]
    refunded = f", {n_refunded:,} of them with refunded settlements only (never screened)" if n_refunded else ""
    if stage == "in_process":
        if not n_open:
            return (
                f"no open stays: all {n_visits:,} visits have ended and have a settlement{refunded}; "
                "in_process screens only stays without an end time or a settlement (settled claims: "
                "--stage post_hoc)."
            )
        return (
            f"the {n_open:,} open stays have no fee lines with a positive quantity after refunds "
            f"({n_fee:,} fee lines in the database)."
        )
    if n_visits and n_open + n_refunded == n_visits:
        return (
            f"no settled claims: none of the {n_visits:,} visits has a settlement (setl_d) that was not "
            "refunded; open stays are screened with --stage in_process."
        )
    return (
        f"none of the {n_fee:,} fee lines belongs to a settled visit with a positive quantity after refunds "
        "(lines of unknown visits, refunded settlements or fully refunded lines are not screened)."
    )


def _context_said(result) -> str:
    """What an incremental run read beyond its new batches, and why: the visits of the persons'
    windows, and those read only for the month-wide types (every visit of each touched month)."""
    ctx = result.context
    if result.n_visits is None:
        return ""
    said = f"; {result.n_visits:,} visits with their history"
    if ctx is not None and not ctx.everything and ctx.months:
        said += (
            f" ({ctx.n_person:,} in the persons' windows, {result.n_visits - ctx.n_person:,} more for the "
            f"month-wide types, which read the whole of {', '.join(ctx.months)})"
        )
    return said


def _screen_summary(con, run_id: int, stage: str, rules) -> None:
    """Every rule of the stage with its count (0 included), then by institution and by severity.

    Laid out for the console's width: at 80 columns (a default terminal, anything piped) each
    rule is one line, its name cut with … (``medaudit rules show ID`` has the rest)."""
    counts = {
        r[0]: r[1:]
        for r in con.execute(
            """
            SELECT rule_id, any_value(rule_name), any_value(rule_type), any_value(severity), count(*),
                   sum(flagged_amt), sum(deduction_amt), sum(claimed_amt) FILTER (WHERE severity = 'suspect')
            FROM findings WHERE last_run = ? GROUP BY rule_id
            """,
            [run_id],
        ).fetchall()
    }
    listed = {r.id: (r.name, r.type, r.severity) for r in rules}
    for rid, c in counts.items():  # a finding of this run whose rule is not in the list (cannot happen today)
        listed.setdefault(rid, c[:3])
    wide = console.width >= _WIDE
    stage_cn = {"post_hoc": "事后审核", "in_process": "事中预警"}.get(stage, "")
    t = _table(f"Findings by rule ({stage} {stage_cn}; {len(listed)} rules)")
    t.add_column("rule", no_wrap=True)
    # the only column that gives way: the numbers and the id never shrink (rich collapses the
    # columns that may wrap; the cell itself is one line, cut with …)
    t.add_column("name (type)" if wide else "name", min_width=_NAME_MIN)
    t.add_column("sev", no_wrap=True)
    for c in ("findings", "flagged", "deduct", "at risk"):
        t.add_column(c, justify="right", no_wrap=True)
    for rid in sorted(listed):
        name, rtype, sev = listed[rid]
        label = Text(name or "", no_wrap=True, overflow="ellipsis")
        if wide:
            label.append(f" ({rtype or ''})", style="dim")
        sev_cn = "违规" if sev == "violation" else "可疑"
        c = counts.get(rid)
        if c is None:
            t.add_row(escape(rid), label, sev_cn, "[dim]0[/]", "[dim]0.00[/]", "[dim]0.00[/]", "[dim]0.00[/]")
        else:
            t.add_row(escape(rid), label, sev_cn, f"{c[3]:,}", f"{c[4]:,.2f}", f"{c[5]:,.2f}", f"{(c[6] or 0):,.2f}")
    console.print(t)
    console.print(
        "[dim]flagged 违规金额 · deduct 扣款 · at risk 可疑待审金额; a rule's full name: medaudit rules show ID[/]",
        overflow="fold",
    )
    by_inst = con.execute(
        """
        SELECT fixmedins_code, count(*), sum(flagged_amt), sum(deduction_amt)
        FROM findings WHERE last_run = ? GROUP BY 1 ORDER BY 4 DESC, 1
        """,
        [run_id],
    ).fetchall()
    if by_inst:
        t = _table("By institution")
        for c in ("institution", "findings", "flagged", "deduction"):
            t.add_column(
                c, justify="left" if c == "institution" else "right", no_wrap=c != "institution", overflow="fold"
            )
        for r in by_inst:
            t.add_row(escape(r[0] or ""), f"{r[1]:,}", f"{r[2]:,.2f}", f"{r[3]:,.2f}")
        console.print(t)
    by_sev = con.execute(
        "SELECT severity, count(*), sum(flagged_amt), sum(deduction_amt), sum(claimed_amt) FROM findings WHERE last_run = ? GROUP BY 1 ORDER BY 1",
        [run_id],
    ).fetchall()
    if by_sev:
        t = _table("By severity")
        for c in ("severity", "findings", "flagged", "deduction", "claimed"):
            t.add_column(c, justify="left" if c == "severity" else "right", no_wrap=True)
        for r in by_sev:
            sev_cn = "违规" if r[0] == "violation" else "可疑"
            t.add_row(f"{sev_cn} ({r[0]})", f"{r[1]:,}", f"{r[2]:,.2f}", f"{r[3]:,.2f}", f"{r[4]:,.2f}")
        console.print(t)


def _screen_spark(target: Path, rules: Path, stage: str, out: Optional[Path], skip_refused: bool, master: str) -> None:
    from .spark import runner

    if out is None:
        fail("--engine spark needs --out FOLDER for the findings (bring them in with `medaudit load-findings`)")
    if not target.is_dir():
        fail(
            f"{target}: --engine spark reads a Parquet batch folder (one folder per table: "
            f"{', '.join(runner.TABLES)}); write one from a database with `medaudit export-parquet`"
        )
    try:
        library = load_library(rules)
    except RuleLibraryError as e:
        fail("the rule library has problems:\n" + "\n".join(e.problems))
    try:
        spark = runner.spark_session(master=master or None)
        res = runner.screen_parquet(spark, target, library, out, stage=stage, skip_refused=skip_refused)
    except runner.SparkRunError as e:
        fail(str(e))
    for t, ids in sorted(res.refused.items()):
        console.print(
            f"[yellow]Not run on Spark[/] ({t}: {escape(runner.REFUSED[t])}): {escape(', '.join(ids))}", overflow="fold"
        )
    console.print(
        f"{res.n_lines:,} lines screened with {res.n_rules:,} rules on Spark in {res.seconds_total:.1f}s: "
        f"{res.n_findings:,} findings, {res.n_finding_lines:,} finding lines written to {escape(str(out))}"
    )


@app.command("export-parquet")
def export_parquet(
    out: Path = typer.Argument(..., help="folder to write: one folder of Parquet per table"),
    db: Path = DbOption,
) -> None:
    """Write a database's loaded tables as a Parquet batch for `screen --engine spark`."""
    from .spark import runner

    con = dbm.open_existing(db, read_only=True)
    counts = runner.export_parquet(con, out)
    console.print(f"Wrote {escape(str(out))}: " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))


@app.command("load-findings")
def load_findings(
    folder: Path = typer.Argument(..., help="the --out folder of `screen --engine spark`"),
    db: Path = DbOption,
) -> None:
    """Bring a Spark run's findings into the database as one screening run (known findings are
    not added again); the hospital loop and the deductions then work on them as on any run."""
    from .spark import runner

    con = dbm.open_existing(db)
    try:
        run_id, n_read, n_new = runner.load_findings(con, folder)
    except runner.SparkRunError as e:
        fail(str(e))
    console.print(f"Run {run_id}: {n_read:,} findings read, {n_new:,} new.")


@app.command()
def screen(
    target: Path = typer.Argument(..., help="a batch folder (loaded first) or a database file"),
    rules: Path = typer.Option(Path("rules"), "--rules", help="rule library folder or YAML file"),
    db: Path = DbOption,
    stage: Literal["post_hoc", "in_process"] = typer.Option(
        "post_hoc",
        "--stage",
        help="post_hoc (settled claims) or in_process (open stays); pre-alert is `medaudit serve`",
    ),
    all_: bool = typer.Option(False, "--all", help="screen everything loaded, not only what new batches touch"),
    batch: Optional[list[int]] = typer.Option(None, "--batch", help="screen what this batch touches (repeatable)"),
    since: Optional[str] = typer.Option(
        None, "--since", help="screen what the batches loaded since this date or time touch"
    ),
    period: Optional[str] = typer.Option(None, "--period", help="screen the visits with lines in this month (YYYY-MM)"),
    engine: Literal["duckdb", "spark"] = typer.Option(
        "duckdb",
        "--engine",
        help="duckdb (a database file or batch folder) or spark (a Parquet batch: see export-parquet)",
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", help="--engine spark: folder for the findings Parquet (then load-findings)"
    ),
    skip_refused: bool = typer.Option(
        False, "--skip-refused", help="--engine spark: leave out (and list) the rules of types Spark cannot run"
    ),
    master: str = typer.Option("local[2]", "--master", help="--engine spark: Spark master ('' under spark-submit)"),
    part_lines: Optional[int] = typer.Option(
        None,
        "--part-lines",
        min=1,
        help="a full screen of more fee lines than this runs in parts of persons, one part's lines "
        "in memory at a time (default: from DuckDB's share of the memory budget: 10 million lines under the "
        "default on a 24 GB machine, 12.8 million under --memory-limit 8GB)",
    ),
) -> None:
    """Screen claims with the rule library; findings are stored in the database.

    By default a run screens what the batches loaded since the stage's last run touch, reading
    as much history as each rule needs (a period limit's period, a readmission's gap, a month);
    the findings are those a full re-screen gives. --all screens everything again; a changed
    rule library does so by itself. --engine spark screens a Parquet batch on Apache Spark and
    writes the findings as Parquet (--out); `medaudit load-findings` brings them into a database."""
    if stage not in ("post_hoc", "in_process"):
        fail(f"--stage must be post_hoc or in_process, got {stage!r} (pre-alert is `medaudit serve`)")
    if engine == "spark":
        _screen_spark(target, rules, stage, out, skip_refused, master)
        return
    try:
        scope = Scope.from_options(all_, batch, since, period)
    except ScopeError as e:
        fail(str(e))
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
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        _RuleTypesColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("preparing lines", total=None)

        def on_type(name: str, i: int, n: int) -> None:
            progress.update(
                task, total=n, completed=i, description=f"screening {name}" if name else "settling deductions"
            )

        try:
            result = run_screen(con, library, stage=stage, on_type=on_type, scope=scope, part_lines=part_lines)
        except ScopeError as e:
            progress.stop()
            fail(str(e))
    console.print(
        f"Run {result.run_id}: {result.n_lines:,} lines screened with {result.n_rules:,} rules in "
        f"{result.seconds_total:.1f}s{f' ({result.n_parts} parts of persons)' if result.n_parts > 1 else ''}; "
        f"{result.n_new_findings:,} new findings."
    )
    if result.scope.startswith("nothing"):
        console.print(f"[yellow]Nothing screened ({stage}):[/] {escape(result.scope)}", overflow="fold")
        return
    console.print(f"[dim]Screened: {escape(result.scope)}{escape(_context_said(result))}[/]", overflow="fold")
    if not result.n_lines:
        console.print(f"[yellow]Nothing screened ({stage}):[/] {escape(_why_nothing_screened(con, stage))}")
    _screen_summary(con, result.run_id, stage, [r for r in library.rules if stage in r.stages])


findings_app = typer.Typer(
    help="Stored findings: list and filter them (--export to CSV or xlsx), show one with its lines and history.",
    invoke_without_command=True,
    add_completion=False,
)
app.add_typer(findings_app, name="findings")

#: what ``findings --export`` writes, in this order (amounts as numbers, the rest as text)
EXPORT_COLUMNS = (
    "finding_id",
    "rule_id",
    "rule_name",
    "rule_type",
    "severity",
    "status",
    "状态",
    "stage",
    "fixmedins_code",
    "机构名称",
    "period",
    "mdtrt_id",
    "psn_no",
    "setl_id",
    "dept_code",
    "科室名称",
    "dr_code",
    "医生名称",
    "flagged_amt",
    "claimed_amt",
    "deduction_amt",
    "evidence",
    "prealert",
    "watched",
    "tips",
)
#: export columns that are not findings columns (labels, names, the doctor's pre-alert answer,
#: the watched entities 重点监控 and the tips 举报 a finding is linked to)
_DERIVED = ("状态", "机构名称", "科室名称", "医生名称", "prealert", "watched", "tips")
_MONEY = ("flagged_amt", "claimed_amt", "deduction_amt")


def _csv_text(v) -> str:
    """A text cell of a CSV that Excel opens: one starting with = + - @ (or a tab/CR) is kept as
    text with a leading ' (OWASP CSV injection), so no cell of a claim extract becomes a formula."""
    s = "" if v is None else str(v)
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s


def _export_findings(path: Path, rows: list[dict]) -> None:
    """Write ``rows`` to ``path`` (.csv UTF-8 with BOM, or .xlsx through medaudit/xlsx.py), whole or not at all."""
    import csv
    import os
    import tempfile

    suffix = path.suffix.lower()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        if suffix == ".csv":
            with open(tmp, "w", newline="", encoding="utf-8-sig") as fh:
                w = csv.writer(fh)
                w.writerow(EXPORT_COLUMNS)
                for r in rows:
                    w.writerow(
                        [f"{r[c]:.2f}" if c in _MONEY and r[c] is not None else _csv_text(r[c]) for c in EXPORT_COLUMNS]
                    )
        else:
            from . import xlsx

            wb = xlsx.workbook(Path(tmp))
            ws = wb.add_worksheet("findings")
            bold = wb.add_format({"bold": True})
            money_fmt = wb.add_format({"num_format": "#,##0.00"})
            for j, c in enumerate(EXPORT_COLUMNS):
                ws.write_string(0, j, c, bold)
            for i, r in enumerate(rows, start=1):
                for j, c in enumerate(EXPORT_COLUMNS):
                    v = r[c]
                    if c in _MONEY and v is not None:
                        ws.write_number(i, j, float(v), money_fmt)
                    else:
                        ws.write_string(i, j, "" if v is None else str(v))
            ws.freeze_panes(1, 0)
            wb.close()
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@findings_app.callback()
def findings(
    ctx: typer.Context,
    db: Path = ExistingDbOption,
    rule: Optional[str] = typer.Option(None, help="only this rule id"),
    institution: Optional[str] = typer.Option(None, help="only this institution code"),
    visit: Optional[str] = typer.Option(None, help="only this visit (mdtrt_id)"),
    person: Optional[str] = typer.Option(None, help="only this person (psn_no)"),
    limit: int = typer.Option(50, min=1, help="findings to show (an export writes every match)"),
    export: Optional[Path] = typer.Option(
        None, "--export", help="write every matching finding to this .csv or .xlsx file"
    ),
    watched: bool = typer.Option(
        False,
        "--watched",
        help="only findings of watched institutions, doctors and persons (重点监控, as review list --watched)",
    ),
) -> None:
    """List stored findings with their evidence (for ad-hoc investigation); `findings show ID` for one."""
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"db": db}
        return
    if export is not None:
        if export.suffix.lower() not in (".csv", ".xlsx"):
            fail(f"--export {export}: give a .csv or .xlsx file name")
        if not export.parent.is_dir():
            fail(f"--export {export}: the folder {export.parent} does not exist")
    con = dbm.open_existing(db, read_only=True)
    where, args, said = ["TRUE"], [], []
    for col, val, label in (
        ("rule_id", rule, "rule"),
        ("fixmedins_code", institution, "institution"),
        ("mdtrt_id", visit, "visit"),
        ("psn_no", person, "person"),
    ):
        if val:
            where.append(f"{col} = ?")
            args.append(val)
            said.append(f"{label} {val}")
    from .supervision import watch as _watch

    if watched:
        where.append(_watch.watched_filter(con))  # constant SQL: the watchlist of this moment
        said.append("watched (重点监控)")
    sql = f"""SELECT {", ".join(c for c in EXPORT_COLUMNS if c not in _DERIVED)}
              FROM findings WHERE {" AND ".join(where)} ORDER BY fixmedins_code, mdtrt_id, rule_id, finding_id"""
    n_all = con.execute(f"SELECT count(*) FROM findings WHERE {' AND '.join(where)}", args).fetchall()[0][0]
    if not n_all:
        console.print(
            "No findings" + (f" match {escape(', '.join(said))}." if said else " in this database."), highlight=False
        )
        return
    if export is not None:
        cur = con.execute(sql, args)
        keys = [d[0] for d in cur.description]
        rows = [dict(zip(keys, r)) for r in cur.fetchall()]
        from .prealert import store as prealert_store

        pre = prealert_store.evidence_for(con)  # the doctor's pre-alert answer, where there is one
        from . import names

        nm = names.Names(con)
        mk = _watch.marks(con, [r["finding_id"] for r in rows])
        for r in rows:
            w, tips = mk.get(r["finding_id"], (None, []))
            r["watched"], r["tips"] = w or "", ", ".join(map(str, tips))
            r["状态"] = lifecycle.status_label(r["status"])
            inst = r["fixmedins_code"]
            r["机构名称"] = nm.name("institution", inst)
            r["科室名称"] = nm.name("dept", r["dept_code"], inst)
            r["医生名称"] = nm.name("doctor", r["dr_code"], inst)
            r["prealert"] = pre.get(r["finding_id"], "")
        _export_findings(export, rows)
        console.print(f"{len(rows):,} findings written to {escape(str(export))}", highlight=False)
        return
    cur = con.execute(sql + f" LIMIT {int(limit)}", args)
    keys = [d[0] for d in cur.description]
    rows = [dict(zip(keys, r)) for r in cur.fetchall()]
    # the doctor's pre-alert answer on the same rule, visit and item (medaudit/prealert/store.py)
    from .prealert import store as prealert_store

    pre = prealert_store.evidence_for(con, [r["finding_id"] for r in rows])
    # stacked, one block a finding: a heading line (wraps at narrow widths), the evidence
    # underneath at the full width of the terminal
    # marked: the watched entities (重点监控, the watchlist of this moment) and the tips (举报) it is linked to
    mk = _watch.marks(con, [r["finding_id"] for r in rows])
    for r in rows:
        w, tips = mk.get(r["finding_id"], (None, []))
        print_finding(
            console,
            r,
            [
                f"重点监控 watched: {w}" if w else "",
                ("举报 tips: " + ", ".join(f"tip {t}" for t in tips)) if tips else "",
                pre.get(r["finding_id"], ""),
            ],
        )
    more = f"; {n_all - len(rows):,} more (--limit, or --export FILE for all)" if n_all > len(rows) else ""
    console.print(
        f"{len(rows):,} of {n_all:,} findings{more}. One with its lines and history: medaudit findings show ID",
        highlight=False,
    )


@findings_app.command("show")
def findings_show(
    ctx: typer.Context,
    finding: str = typer.Argument(..., help="finding id (or a unique prefix of at least 6 characters)"),
    db: Optional[Path] = typer.Option(None, "--db", help="DuckDB database file (made by load or screen)"),
) -> None:
    """One finding: its evidence, its fee lines with their amounts, and its history (audit log)."""
    if db is None:  # `findings --db X show ID` or `findings show ID --db X`
        db = (ctx.obj or {}).get("db", Path(dbm.DEFAULT_DB))
    con = dbm.open_existing(db, read_only=True)
    try:
        ref = lifecycle.resolve(con, finding)
    except lifecycle.LifecycleError as e:
        fail(str(e))
    cur = con.execute("SELECT * FROM findings WHERE finding_id = ?", [ref.finding_id])
    f = dict(zip([d[0] for d in cur.description], cur.fetchall()[0]))
    sev = "违规 (violation)" if f["severity"] == "violation" else "可疑 (suspect)"
    state = con.execute(
        "SELECT deadline, appeal_round, statement_id FROM finding_state WHERE finding_id = ?", [ref.finding_id]
    ).fetchall()
    g = Table.grid(padding=(0, 2))
    g.add_column(style="bold", no_wrap=True)
    g.add_column(overflow="fold")
    for k, v in (
        ("finding", f["finding_id"]),
        ("rule", f"{f['rule_id']} v{f['rule_version']} {f['rule_name'] or ''} ({f['rule_type']})"),
        ("severity", sev),
        ("status 状态", lifecycle.status_label(f["status"])),
        ("institution", f"{f['fixmedins_code'] or ''}  dept {f['dept_code'] or '-'}  doctor {f['dr_code'] or '-'}"),
        (
            "visit",
            f"{f['mdtrt_id'] or ''}  person {f['psn_no'] or ''}  settlement {f['setl_id'] or '-'}  "
            f"period {f['period'] or ''}",
        ),
        (
            "amounts",
            f"flagged {f['flagged_amt']:,.2f}  claimed {f['claimed_amt']:,.2f}  deduction {f['deduction_amt']:,.2f}",
        ),
        ("basis", f["basis"] or ""),
    ):
        g.add_row(k, Text(str(v)))
    if state and state[0][0] is not None:
        g.add_row("deadline", Text(f"{state[0][0]} (appeal round {state[0][1] or 0})"))
    if state and state[0][2] is not None:
        g.add_row("statement", Text(f"final in deduction statement {state[0][2]}"))
    from .supervision import watch as _watch

    watched, tips = _watch.finding_marks(con, ref.finding_id)
    if watched:
        g.add_row("重点监控", Text(f"watched: {watched}"))
    if tips:
        g.add_row("举报 tips", Text(", ".join(f"tip {t}" for t in tips)))
    console.print(g)
    console.print(Text("evidence", style="bold"))
    console.print(Padding(Text(f["evidence"] or ""), (0, 0, 0, 2)), overflow="fold")
    from .prealert import store as prealert_store

    pre = prealert_store.evidence_for(con, [ref.finding_id])
    if ref.finding_id in pre:
        console.print(Padding(Text(pre[ref.finding_id]), (0, 0, 0, 2)), overflow="fold")
    lines = [tuple(x.values())[:9] for x in lifecycle.lines_of(con, ref.finding_id)]
    t = _table(f"Lines ({len(lines)})")
    t.add_column("role", no_wrap=True)
    t.add_column("line", overflow="fold")
    t.add_column("time", no_wrap=True)
    t.add_column("item", overflow="fold", min_width=15)
    for c in ("cnt", "price", "amount", "claim"):
        t.add_column(c, justify="right", no_wrap=True)
    for role, sn, when, code, name, cnt, pric, amt, claim in lines:
        t.add_row(
            "违规" if role == "violating" else "相关",
            Text(sn or ""),
            when.strftime("%Y-%m-%d\n%H:%M:%S") if when else "",
            Text(f"{name or ''}\n{code or ''}".strip()),
            _num(cnt),
            _num(pric),
            f"{amt:,.2f}" if amt is not None else "",
            f"{claim:,.2f}" if claim is not None and role == "violating" else "",
        )
    console.print(t)
    events = lifecycle.history(con, ref.finding_id)
    console.print(history_table(events, f"History 处理记录 ({len(events)})"))


def _num(x) -> str:
    """A quantity or price as a clerk writes it: 2, 2.5, 31.5 (no trailing zeros)."""
    if x is None:
        return ""
    s = f"{x:f}"
    return s.rstrip("0").rstrip(".") if "." in s else s


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
