"""``medaudit analyze``: in-process analysis (事中分析): per institution, department or doctor,
visits, amounts, shares, costs, length of stay and readmissions over a period, each value with
its denominator and its percentile among peers. Definitions: :mod:`medaudit.analysis`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer
from rich.console import Console
from rich.text import Text

from .. import analysis as an, db as dbm
from ..clihelp import compact_table, plain
from ..clihelp import fail

console = Console()
err = Console(stderr=True)


def render(a: an.Analysis, limit: int, highlight: str | None = None) -> None:
    """The table stacked for 80 columns: per entity a heading line, then one row per metric
    (value, denominator, percentile among peers). Wide consoles get the same layout: a table of
    13 metrics x 3 figures never fits one line per entity."""
    o = a.opts
    console.print(
        Text(
            f"事中分析 analysis: {o.level}, {o.period.label}, {o.stage}; {len(a.rows):,} entities "
            f"(min visits {o.min_visits}, min stays {o.min_stays}, min peers {o.min_peers})"
        ),
        overflow="fold",
    )
    hl = {id(r) for r in a.highlighted(highlight)}
    shown = [r for r in a.rows if id(r) in hl] + [r for r in a.rows if id(r) not in hl]
    for r in shown[:limit]:
        t = compact_table()
        t.add_column(
            Text(plain(a.entity_label(r)), style="bold red" if id(r) in hl else "bold"), overflow="fold", min_width=20
        )
        t.add_column("value", justify="right", no_wrap=True)
        t.add_column("n", justify="right", no_wrap=True)
        t.add_column("pctl", justify="right", no_wrap=True)
        for m in an.METRICS:
            t.add_row(f"{m.zh} {m.en}", an.fmt(m, r.get(m.key)), an.denom_text(a, m, r), an.pct_text(r, m))
        console.print(t)
    if len(shown) > limit:
        console.print(
            f"[dim]{len(shown) - limit:,} more entities (largest total first); --limit N shows more, "
            "--out x.xlsx has all[/]",
            overflow="fold",
        )
    if not a.rows:
        console.print("[yellow]note:[/] no visit with screened lines in this period and these filters", overflow="fold")
    console.print(
        "[dim]— : below the minimum denominator (n<min) or nothing to divide; pctl: percentile among peers "
        "(same level; same department code; same diagnosis group with --by-diag)[/]",
        overflow="fold",
    )


def analyze(
    level: Literal["institution", "department", "doctor"] = typer.Option(
        "institution", "--level", help="who is profiled: institution, department or doctor"
    ),
    period: Optional[str] = typer.Option(None, "--period", help="a month YYYY-MM (visits by start date)"),
    quarter: Optional[str] = typer.Option(None, "--quarter", help="a quarter, e.g. 2026Q1"),
    year: Optional[str] = typer.Option(None, "--year", help="a year, e.g. 2026"),
    date_from: Optional[str] = typer.Option(None, "--from", help="first day YYYY-MM-DD (or month YYYY-MM)"),
    date_to: Optional[str] = typer.Option(None, "--to", help="last day YYYY-MM-DD (or month YYYY-MM)"),
    stage: Literal["post_hoc", "in_process"] = typer.Option(
        "post_hoc", "--stage", help="post_hoc: settled claims; in_process: open stays"
    ),
    institution: Optional[str] = typer.Option(
        None, "--institution", help="show this institution's rows only (peers stay every institution's)"
    ),
    hosp_level: Optional[int] = typer.Option(None, "--hosp-level", help="institutions of this level only (0-3)"),
    med_type_group: Optional[Literal["inpatient", "outpatient"]] = typer.Option(
        None, "--med-type-group", help="inpatient (med_type 2x) or outpatient visits only"
    ),
    diag_prefix: Optional[str] = typer.Option(None, "--diag-prefix", help="visits whose main diagnosis starts so"),
    by_diag: bool = typer.Option(
        False,
        "--by-diag",
        help="split entities by diagnosis group (main diagnosis, 3 characters); peers in the same group",
    ),
    min_visits: int = typer.Option(30, "--min-visits", help="visits a share or cost per visit needs"),
    min_stays: int = typer.Option(30, "--min-stays", help="stays LOS, cost per bed day and readmission need"),
    min_peers: int = typer.Option(5, "--min-peers", help="peers with a value a percentile needs"),
    highlight: Optional[str] = typer.Option(
        None, "--highlight", help="entity code (or INSTITUTION/CODE) shown first and in red (HTML: in every plot)"
    ),
    limit: int = typer.Option(20, "--limit", help="entities printed (largest total first)"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the table as xlsx"),
    html_out: Optional[Path] = typer.Option(None, "--html", help="write a self-contained HTML page"),
    db: Path = typer.Option(dbm.DEFAULT_DB, "--db", help="DuckDB database file (made by load or screen)"),
) -> None:
    """Shares, costs, LOS and readmissions per institution, department or doctor, with percentiles among peers.

    Visits count by start date; amounts are net of refunds. Drug share: list_type 101, 102; consumable
    share: list_type 301; the other shares count lines of other list_types by med_chrgitm_type: exam &
    lab 03, 04; treatment 05, 06; bed & nursing 01, 07. Readmission: the readmission rule type's
    defaults (15 days, same institution, same 3-character main diagnosis, Z51 left out). Percentile:
    100 x (rank - 1) / (peers - 1) among peers with a value (same level; same department code; same
    diagnosis group with --by-diag). Full definitions: docs/analysis.md.
    """
    for p, opt, ext in ((out, "--out", ".xlsx"), (html_out, "--html", ".html")):
        if p is not None and p.suffix.lower() not in (ext, ".htm" if ext == ".html" else ext):
            fail(f"{opt} {p} must end with {ext}")
        if p is not None and not p.parent.exists():
            fail(f"{opt} {p}: folder {p.parent} does not exist")
    try:
        opts = an.Options(
            level=level,
            period=an.parse_period(period, quarter, year, date_from, date_to),
            stage=stage,
            institution=institution,
            hosp_level=hosp_level,
            med_type_group=med_type_group,
            diag_prefix=diag_prefix,
            by_diag=by_diag,
            min_visits=min_visits,
            min_stays=min_stays,
            min_peers=min_peers,
        )
        opts.check()
    except an.AnalysisError as e:
        fail(str(e))
    if limit < 0:
        fail(f"--limit must be 0 or more, got {limit}")
    con = dbm.open_existing(db, read_only=True)
    a = an.analyze(con, opts)[level]
    render(a, limit, highlight)
    if highlight and not a.highlighted(highlight):
        console.print(
            Text.assemble(("note:", "yellow"), f" --highlight {plain(highlight)}: no such {level} in the table"),
            overflow="fold",
        )
    if out is not None:
        an.write_xlsx(a, out)
        console.print(f"written {out}")
    if html_out is not None:
        an.write_html(a, html_out, highlight)
        console.print(f"written {html_out}")


def register(root: typer.Typer) -> None:
    root.command("analyze")(analyze)
