"""``medaudit assess``: the annual (or monthly) assessment of institutions with a scoring scheme."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .. import db as dbm, names
from ..clihelp import compact_table, fail
from ..supervision import assess as asm, assess_report, scheme as schm, store

console = Console()
err = Console(stderr=True)


def assess(
    year: int = typer.Option(..., "--year", help="the year assessed, e.g. 2026 (settlement months 01..12)"),
    month: Optional[int] = typer.Option(None, "--month", help="assess this month of the year only (1..12)"),
    scheme: Optional[Path] = typer.Option(
        None,
        "--scheme",
        help="scoring scheme YAML (default: the sample scheme medaudit/supervision/default_scheme.yaml)",
    ),
    by: str = typer.Option("medaudit", "--by", help="who runs the assessment (audit log)"),
    out: Optional[Path] = typer.Option(None, "--out", help="write the views as xlsx (one sheet per view)"),
    html_out: Optional[Path] = typer.Option(None, "--html", help="write a self-contained HTML page with charts"),
    check: bool = typer.Option(False, "--check", help="only check the scheme file and print its version and hash"),
    limit: int = typer.Option(30, "--limit", help="institutions printed"),
    db: Path = typer.Option(dbm.DEFAULT_DB, "--db", help="DuckDB database file (made by load or screen)"),
) -> None:
    """Score every institution from its final statements and findings: violations by nature, deductions,
    appeals, violation amount per 10,000 yuan of fund payment, trend, rank within its level, grade and
    the one-vote veto (一票否决) with the findings that triggered it. Stored with the scheme's version and hash."""
    try:
        sch = schm.load(scheme)
    except schm.SchemeError as e:
        fail("the scheme has problems:\n" + "\n".join(e.problems))
    if check:
        console.print(
            f"{sch.source}: {sch.name} version {sch.version}, {len(sch.indicators)} indicators, "
            f"{len(sch.vetoes)} veto conditions; SHA-256 {sch.hash}",
            highlight=False,
        )
        return
    for p, opt, ext in ((out, "--out", (".xlsx",)), (html_out, "--html", (".html", ".htm"))):
        if p is not None and p.suffix.lower() not in ext:
            fail(f"{opt} {p} must end with {ext[0]}")
        if p is not None and not p.parent.exists():
            fail(f"{opt} {p}: folder {p.parent} does not exist")
    try:
        asm.months_of(year, month)
    except store.SupervisionError as e:
        fail(str(e))
    con = dbm.open_existing(db)
    a = asm.assess(con, sch, year, month, by=by)
    nm = names.Names(con)
    t = compact_table(f"考核 {a.label}: {sch.name} {sch.version} (run {a.run_id})")
    for c in ("rank", "level", "institution", "score", "grade", "veto", "violations", "deducted", "per 10k fund"):
        t.add_column(c, justify="right" if c in ("rank", "score", "violations", "deducted", "per 10k fund") else "left")
    for r in a.results[:limit]:
        t.add_row(
            f"{r.rank}/{r.n_in_level}",
            assess_report.LEVEL_CN.get(r.level, str(r.level)),
            nm.institution(r.code),
            f"{r.score}",
            r.grade,
            ", ".join(v[0] for v in r.vetoes) or "-",
            f"{r.measures['violations']:,}",
            f"{r.measures['deductions']:,.2f}",
            assess_report._fmt_measure(r.measures["per_10k_fund"]),
        )
    console.print(t)
    if len(a.results) > limit:
        console.print(f"{len(a.results) - limit:,} more institutions (--limit N, or --out)")
    for r in a.results:
        for vid, vname, val, fids in r.vetoes:
            console.print(
                f"veto {vid} {vname}: {r.code} ({assess_report._fmt_measure(val)}); findings: "
                + (
                    ", ".join(f[:12] for f in fids[:10]) + (f" and {len(fids) - 10} more" if len(fids) > 10 else "")
                    if fids
                    else "-"
                ),
                highlight=False,
            )
    console.print(f"scheme SHA-256 {sch.hash}; result SHA-256 {a.result_hash}", highlight=False)
    if out is not None:
        assess_report.write_xlsx(a, con, out)
        console.print(f"written {out}")
    if html_out is not None:
        assess_report.write_html(a, con, html_out)
        console.print(f"written {html_out}")


def register(root: typer.Typer) -> None:
    root.command("assess")(assess)
