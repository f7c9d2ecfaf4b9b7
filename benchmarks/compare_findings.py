"""Before/after check for engine changes: the findings of two screens must be the same to the cent.

    .venv/bin/python benchmarks/bench_screen.py --extra-rules rules/national --dump /tmp/before
    ... change the engine ...
    .venv/bin/python benchmarks/bench_screen.py --extra-rules rules/national --dump /tmp/after
    .venv/bin/python benchmarks/compare_findings.py /tmp/before/k1 /tmp/after/k1

:func:`dump` writes a screened database's ``findings`` (every column but ``created_at``, the
clock) and ``finding_lines`` (finding id, line, role, amount, claim, carried) to Parquet;
``compare`` reads two dumps and reports counts, finding ids, the claimed and deducted sums, and
every row that differs in any column (evidence text included). Exit status 1 when they differ.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import duckdb

FINDING_ORDER = "finding_id"
LINE_ORDER = "finding_id, bkkp_sn, role"


def _quote(text: str) -> str:
    """A SQL string literal (COPY takes no bound parameter for its target)."""
    return "'" + text.replace("'", "''") + "'"


def dump(con: duckdb.DuckDBPyConnection, out: Path) -> None:
    """Findings and finding lines of the database, sorted, to ``out``/{findings,finding_lines}.parquet."""
    out.mkdir(parents=True, exist_ok=True)
    for name, sql in (
        ("findings", f"SELECT * EXCLUDE (created_at) FROM findings ORDER BY {FINDING_ORDER}"),
        ("finding_lines", f"SELECT * FROM finding_lines ORDER BY {LINE_ORDER}"),
    ):
        target = out / f"{name}.parquet"
        con.execute(f"COPY ({sql}) TO {_quote(str(target))} (FORMAT parquet)")


def compare(a: Path, b: Path, show: int = 5) -> bool:
    """Print how dumps ``a`` and ``b`` differ; True when they are identical."""
    con = duckdb.connect()
    for side, d in (("a", a), ("b", b)):
        for name in ("findings", "finding_lines"):
            f = d / f"{name}.parquet"
            if not f.exists():
                raise SystemExit(f"{f}: no such dump (bench_screen.py --dump writes it)")
            con.execute(f"CREATE TABLE {side}_{name} AS SELECT * FROM read_parquet(?)", [str(f)])
    same = True
    for side in ("a", "b"):
        n, ids, claimed, deducted = con.execute(
            f"SELECT count(*), count(DISTINCT finding_id), sum(claimed_amt), sum(deduction_amt) FROM {side}_findings"
        ).fetchall()[0]
        nl, carried, claim = con.execute(
            f"SELECT count(*), sum(carried), sum(claim) FROM {side}_finding_lines"
        ).fetchall()[0]
        print(
            f"{side} = {a if side == 'a' else b}: {n:,} findings ({ids:,} ids), claimed {claimed}, deducted {deducted}; "
            f"{nl:,} finding lines, claim {claim}, carried {carried}"
        )
    for name, key in (("findings", FINDING_ORDER), ("finding_lines", LINE_ORDER)):
        cols_a = [r[0] for r in con.execute(f"DESCRIBE a_{name}").fetchall()]
        cols_b = [r[0] for r in con.execute(f"DESCRIBE b_{name}").fetchall()]
        if cols_a != cols_b:
            print(f"{name}: columns differ: {cols_a} vs {cols_b}")
            same = False
            continue
        for x, y in (("a", "b"), ("b", "a")):
            n = con.execute(
                f"SELECT count(*) FROM (SELECT * FROM {x}_{name} EXCEPT ALL SELECT * FROM {y}_{name})"
            ).fetchall()[0][0]
            if n:
                same = False
                print(f"{name}: {n:,} rows in {x} that {y} does not have, e.g.:")
                for row in con.execute(
                    f"SELECT * FROM (SELECT * FROM {x}_{name} EXCEPT ALL SELECT * FROM {y}_{name}) "
                    f"ORDER BY {key} LIMIT {int(show)}"
                ).fetchall():
                    print("   ", row)
        if name == "findings":
            diff_cols = []
            for c in cols_a:
                q = f'"{c}"'
                n = con.execute(
                    f"SELECT count(*) FROM a_findings a JOIN b_findings b USING (finding_id) "
                    f"WHERE a.{q} IS DISTINCT FROM b.{q}"
                ).fetchall()[0][0]
                if n:
                    diff_cols.append(f"{c} ({n:,})")
            if diff_cols:
                print("findings with the same id that differ in:", ", ".join(diff_cols))
    print("IDENTICAL" if same else "DIFFERENT")
    return same


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="a dump folder (bench_screen.py --dump DIR writes DIR/k1, DIR/k10, ...)")
    ap.add_argument("b", type=Path)
    ap.add_argument("--show", type=int, default=5, help="differing rows shown per table and side")
    args = ap.parse_args(argv)
    return 0 if compare(args.a, args.b, args.show) else 1


if __name__ == "__main__":
    raise SystemExit(main())
