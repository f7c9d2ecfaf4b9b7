"""``medaudit sample``: realistic sample batches with injected violations and an answer key."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ..clihelp import fail


def register(app: typer.Typer) -> None:
    sample = typer.Typer(
        help="Sample data: a realistic claim batch with known violations (answer_key.csv).", no_args_is_help=True
    )
    console = Console()

    @sample.command("generate")
    def generate_cmd(
        out: Path = typer.Option(
            ..., "--out", help="batch folder to write (created; same-named table files are replaced)"
        ),
        visits: Optional[int] = typer.Option(None, "--visits", help="number of visits (default 300, or from --lines)"),
        lines: Optional[int] = typer.Option(
            None, "--lines", help="approximate number of fee lines instead of --visits"
        ),
        seed: int = typer.Option(1, "--seed", help="random seed: the same seed gives the same batch"),
        fmt: str = typer.Option("csv", "--format", help="csv or parquet"),
        types: Optional[str] = typer.Option(None, "--types", help="only inject these rule types (comma-separated)"),
        part_lines: Optional[int] = typer.Option(
            None,
            "--part-lines",
            help="make the batch in parts of about this many fee lines, each written as it is made, so memory "
            "is bounded by a part (e.g. 2000000 for batches of tens of millions of lines); a batch no larger "
            "is made in one piece, byte for byte as without it",
        ),
    ) -> None:
        """Write a batch folder (data contract format) plus answer_key.csv, one row per injected violating line."""
        from ..sample import generate

        if fmt not in ("csv", "parquet"):
            fail(f"--format must be csv or parquet, got {fmt!r}")
        if visits is not None and visits < 1:
            fail("--visits must be at least 1")
        if visits is None and lines is None:
            visits = 300
        only = [t.strip() for t in types.split(",") if t.strip()] if types is not None else None
        if only:
            from ..sample.injectors import discover

            known = discover()
            unknown = [t for t in only if t not in known]
            if unknown:
                fail(f"no injector for {', '.join(unknown)} (injectors: {', '.join(known)})")
        if part_lines is not None and part_lines < 1000:
            fail("--part-lines must be at least 1000")
        g = generate(out, visits=visits, seed=seed, fmt=fmt, lines=lines, types=only, part_lines=part_lines)
        made = f", {len(g.parts)} parts" if g.parts else ""
        t = Table(title=f"Sample batch {out} (seed {seed}{made}, {g.seconds:.1f}s)")
        t.add_column("file")
        t.add_column("rows", justify="right")
        for name, n in g.tables.items():
            t.add_row(name, f"{n:,}")
        console.print(t)
        k = Table(title="Injected violations (answer_key.csv)")
        k.add_column("rule type")
        k.add_column("violating lines", justify="right")
        for name, n in g.by_type.items():
            k.add_row(name, f"{n:,}")
        console.print(k)

    app.add_typer(sample, name="sample")
