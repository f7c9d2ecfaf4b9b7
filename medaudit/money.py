"""Money: a line is never deducted twice.

Every finding keeps the claim it makes on each of its violating lines (``finding_lines.claim``).
Across all findings that claim money, a line's deduction is the largest claim on it, carried by
that finding (ties: the lowest rule id, then the finding id); the other findings keep the line
as supporting evidence with 0 carried. A finding's deduction is the sum of what it carries,
rounded half-up to 0.01 only there, at the end.

Which findings claim money: post-hoc violations whose deduction still stands or may stand
(not overturned, dismissed or superseded). Suspects claim nothing until a reviewer confirms
them (``finding_state.confirmed``, see :mod:`medaudit.hospital_loop.lifecycle`); in-process warnings never claim.

Final deductions never change: a finding in a final deduction statement keeps what it carried,
and a line already deducted by a statement (``deduction_lines``) is carried by nobody else,
even by a later finding that claims more on it.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

import duckdb

CENT = Decimal("0.01")
#: the largest amount a DECIMAL(18,2) column holds
MAX_AMOUNT = Decimal("9999999999999999.99")
_AMOUNT = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")


class AmountError(ValueError):
    """An amount typed by a user that is not a number of yuan; the message names where it came from."""


def yuan(x) -> Decimal:
    """Round half-up to 0.01 (10.005 -> 10.01): the one rounding of money in the project."""
    return Decimal(str(x)).quantize(CENT, rounding=ROUND_HALF_UP)


def parse_amount(value, where: str) -> Decimal:
    """An amount typed by a user (a CLI option, a workbook cell) as Decimal yuan, rounded half-up
    to 0.01. Refused with :class:`AmountError` (naming ``where``, e.g. ``--amount`` or ``row 3,
    column 金额``): empty, not a plain decimal number (``nan``, ``inf``, ``1e3``, ``12元``),
    negative, or too large for the database."""
    if isinstance(value, bool) or value is None:
        raise AmountError(f"{where}: an amount of yuan is required, got {value!r}")
    if isinstance(value, (int, float, Decimal)):
        text = repr(value) if isinstance(value, float) else str(value)
        if isinstance(value, Decimal) and value.is_finite():
            text = format(value, "f")
    else:
        text = str(value).strip()
    neg = text.startswith("-")
    if not _AMOUNT.fullmatch(text.lstrip("+-")) or text[:1] == "+":
        raise AmountError(f"{where}: {value!r} is not an amount of yuan (write digits, e.g. 20 or 20.50)")
    if neg and Decimal(text) != 0:
        raise AmountError(f"{where}: the amount must not be negative, got {value!r}")
    amount = yuan(text.lstrip("-"))
    if amount > MAX_AMOUNT:
        raise AmountError(f"{where}: {value!r} is too large an amount")
    return amount


#: statuses whose money no longer stands
DEAD_STATUSES = ("overturned", "dismissed", "superseded")

CLAIMING = f"""f.stage = 'post_hoc'
    AND (f.severity = 'violation' OR f.status = 'confirmed'
         OR f.finding_id IN (SELECT finding_id FROM finding_state WHERE confirmed))
    AND f.status NOT IN ({", ".join(repr(s) for s in DEAD_STATUSES)})"""


#: the lines a screening run's findings touch (``bkkp_sn``): a temporary table the engine makes
#: for :func:`settle_deductions` ``touched=True``
TOUCHED_LINES = "settle_touched_lines"


def settle_deductions(con: duckdb.DuckDBPyConnection, touched: bool = False) -> None:
    """Recompute who carries each line's money and every finding's deduction.

    ``touched``: only the lines in the temporary table :data:`TOUCHED_LINES`, and the totals of
    the findings holding one of them: what settling everything gives, when the database was
    settled before and only those lines' findings changed since. A line's carrier depends only on
    the findings that claim that line, and a finding's deduction only on its own lines; a
    screening run adds findings and supersedes others and nothing else moves, so a nightly run
    settles the lines its findings hold and every finding holding one (older ones included: a
    new finding may take a line from one), and its cost stays with the night instead of the
    months of findings behind it (2.47M findings: everything 4.7 to 5.0 s, a night of 5,000 lines
    0.54 to 0.90 s; ``benchmarks/bench_settle.py``). Every other change (an appeal decided, a
    statement made final, a full re-screen) settles everything. One statement list serves both:
    ``touched`` only narrows the rows it starts from. ``tests/test_deduct.py`` compares the two
    from states with final statements, frozen lines, overturned and confirmed findings;
    ``tests/test_incremental.py`` night after night, and with a night that takes a line from an
    earlier finding."""
    lines = f"WHERE bkkp_sn IN (SELECT bkkp_sn FROM {TOUCHED_LINES})" if touched else ""
    holders = "WHERE finding_id IN (SELECT finding_id FROM __tl)" if touched else ""
    their_lines = "WHERE finding_id IN (SELECT finding_id FROM __tf)" if touched else ""
    con.execute(
        f"""
        -- final: findings in a deduction statement, and the lines those statements deducted
        CREATE OR REPLACE TEMP TABLE __final AS SELECT finding_id FROM finding_state WHERE statement_id IS NOT NULL;
        CREATE OR REPLACE TEMP TABLE __frozen AS SELECT DISTINCT bkkp_sn FROM deduction_lines;
        -- the finding lines settled (every one, or every finding's row of a touched line), and
        -- the findings holding them, each with where it is
        CREATE OR REPLACE TEMP TABLE __tl AS
        SELECT rowid AS rid, finding_id, bkkp_sn, role, claim, carried FROM finding_lines {lines};
        CREATE OR REPLACE TEMP TABLE __tf AS
        SELECT rowid AS rid, finding_id, rule_id, stage, severity, status, deduction_amt FROM findings {holders};

        -- each line's carrier: the row of the largest claim among the findings that claim
        -- money on it (ties: the lowest rule id, then finding id; a finding holds a line once).
        -- An aggregate, not a row_number() window over every claiming row: the window sorted
        -- the 750,600 claiming rows of ten copies of every rule for one winner a line (0.17 s;
        -- the aggregate 0.08 s)
        CREATE OR REPLACE TEMP TABLE __carriers AS
        SELECT arg_min(fl.rid, (-fl.claim, f.rule_id, f.finding_id)) AS rid
        FROM __tl fl JOIN __tf f USING (finding_id)
        WHERE fl.role = 'violating' AND fl.claim > 0 AND {CLAIMING}
          AND fl.finding_id NOT IN (SELECT finding_id FROM __final)
          AND fl.bkkp_sn NOT IN (SELECT bkkp_sn FROM __frozen)
        GROUP BY fl.bkkp_sn;

        -- a carrier's row takes its share and any other row of a finding not final holds 0;
        -- only the rows whose share changes are rewritten
        UPDATE finding_lines SET carried = n.carried
        FROM (SELECT t.rid, CASE WHEN c.rid IS NOT NULL THEN t.claim ELSE 0 END AS carried
              FROM __tl t LEFT JOIN __carriers c USING (rid)
              WHERE t.finding_id NOT IN (SELECT finding_id FROM __final)
                AND CASE WHEN c.rid IS NULL THEN t.carried <> 0 ELSE t.carried IS DISTINCT FROM t.claim END) n
        WHERE finding_lines.rowid = n.rid;

        -- each finding's deduction: what its lines carry (all of them, touched or not)
        UPDATE findings SET deduction_amt = n.total
        FROM (SELECT f.rid, coalesce(t.total, 0) AS total
              FROM __tf f LEFT JOIN (
                  SELECT finding_id, CAST(round(sum(carried), 2) AS DECIMAL(18,2)) AS total FROM finding_lines
                  {their_lines} GROUP BY finding_id) t USING (finding_id)
              WHERE f.finding_id NOT IN (SELECT finding_id FROM __final)
                AND f.deduction_amt IS DISTINCT FROM coalesce(t.total, 0)) n
        WHERE findings.rowid = n.rid;
        DROP TABLE __carriers;
        DROP TABLE __tl;
        DROP TABLE __tf;
        DROP TABLE __final;
        DROP TABLE __frozen;
        """
    )
