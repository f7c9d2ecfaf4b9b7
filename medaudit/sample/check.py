"""Compare the findings of a screening run with a sample batch's answer key.

The comparison is at the level of (rule type, visit, violating line): every key row must be a
violating line of a finding of that type on that visit (recall), and every violating line of
every finding must be in the key (precision). A key row without ``bkkp_sn`` stands for a
finding about the visit as a whole; for such a (type, visit) only the visit is compared.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import polars as pl


@dataclass
class Comparison:
    expected: pl.DataFrame  # rule_type, mdtrt_id, bkkp_sn (+ rule_id, note)
    found: pl.DataFrame  # rule_type, mdtrt_id, bkkp_sn, rule_id
    missed: pl.DataFrame
    extra: pl.DataFrame

    @property
    def recall(self) -> float:
        n = self.expected.height
        return 1.0 if n == 0 else (n - self.missed.height) / n

    @property
    def precision(self) -> float:
        n = self.found.height
        return 1.0 if n == 0 else (n - self.extra.height) / n

    def by_type(self) -> pl.DataFrame:
        types = sorted(set(self.expected["rule_type"]) | set(self.found["rule_type"]))
        rows = []
        for t in types:
            e = self.expected.filter(pl.col("rule_type") == t).height
            f = self.found.filter(pl.col("rule_type") == t).height
            m = self.missed.filter(pl.col("rule_type") == t).height
            x = self.extra.filter(pl.col("rule_type") == t).height
            rows.append({"rule_type": t, "expected": e, "found": f, "missed": m, "extra": x})
        return pl.DataFrame(
            rows,
            schema={
                "rule_type": pl.Utf8,
                "expected": pl.Int64,
                "found": pl.Int64,
                "missed": pl.Int64,
                "extra": pl.Int64,
            },
        )

    def report(self, limit: int = 40) -> str:
        out = [str(self.by_type())]
        if self.missed.height:
            out.append(f"MISSED ({self.missed.height}), in the key but not flagged:\n{self.missed.head(limit)}")
        if self.extra.height:
            out.append(f"EXTRA ({self.extra.height}), flagged but not in the key:\n{self.extra.head(limit)}")
        return "\n".join(out)


def compare(con: duckdb.DuckDBPyConnection, key: pl.DataFrame, run_id: int | None = None) -> Comparison:
    """Findings of ``run_id`` (default: every stored finding) against the answer key."""
    where = f"WHERE f.last_run = {int(run_id)}" if run_id is not None else ""
    found = con.sql(
        f"""SELECT DISTINCT f.rule_type, f.mdtrt_id, fl.bkkp_sn, f.rule_id
            FROM findings f LEFT JOIN finding_lines fl ON fl.finding_id = f.finding_id AND fl.role = 'violating'
            {where}"""
    ).pl()
    key = key.with_columns(pl.col("bkkp_sn").replace("", None))
    # (type, visit) pairs the key describes as a whole: compare without lines there
    whole = key.filter(pl.col("bkkp_sn").is_null()).select("rule_type", "mdtrt_id").unique()
    if whole.height:
        hit = found.join(whole, on=["rule_type", "mdtrt_id"], how="semi").with_columns(
            pl.lit(None, pl.Utf8).alias("bkkp_sn")
        )
        found = pl.concat([found.join(whole, on=["rule_type", "mdtrt_id"], how="anti"), hit])
    found = found.unique(subset=["rule_type", "mdtrt_id", "bkkp_sn"], keep="first").sort(
        "rule_type", "mdtrt_id", "bkkp_sn"
    )
    expected = key.unique(subset=["rule_type", "mdtrt_id", "bkkp_sn"], keep="first").sort(
        "rule_type", "mdtrt_id", "bkkp_sn"
    )
    on = ["rule_type", "mdtrt_id", "bkkp_sn"]
    missed = expected.join(found.select(on), on=on, how="anti", nulls_equal=True)
    extra = found.join(expected.select(on), on=on, how="anti", nulls_equal=True)
    return Comparison(expected, found, missed, extra)
