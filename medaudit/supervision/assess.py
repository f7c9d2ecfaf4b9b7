"""The assessment (年度考核): per institution, from final deduction statements and findings.

Per institution over the assessed months (``--year Y``: Y-01..Y-12; ``--month M``: that month
only): violation count and amount by 问题性质 (the nature of the finding's rule: the rule
type's, or the rule's own ``nature:``; table in docs/supervision.md), deductions, appeals filed
and won, violation amount per 10,000 yuan of fund payment, the trend by month and the rank
among institutions of the same level (from ``mdtrt_d.hosp_lv``). A scoring scheme
(:mod:`.scheme`) turns the measures into a score, a grade and the veto (一票否决) with the
finding ids that triggered it.

A violation counts once it is final: a finding in a deduction statement (扣款单) of the
months. Everything is computed with exact decimals in a fixed order, so the same scheme on the
same data gives the same result (``assessment_runs.result_hash``); each run records the
scheme's version and SHA-256.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from decimal import ROUND_HALF_UP, Decimal

import duckdb

from ..hospital_loop import lifecycle
from . import store
from .scheme import NATURES, Scheme

CENT = Decimal("0.01")
Q4 = Decimal("0.0001")


@dataclass
class InstResult:
    code: str
    level: int
    measures: dict  # measure -> Decimal | int | None
    monthly: dict  # YYYY-MM -> {violations, violation_amount, deductions, fund_pay}
    points: dict = field(default_factory=dict)  # indicator id -> Decimal
    score: Decimal = Decimal(0)
    grade: str = ""
    vetoes: list = field(default_factory=list)  # (veto id, name, value, [finding ids])
    rank: int = 0
    n_in_level: int = 0

    @property
    def vetoed(self) -> bool:
        return bool(self.vetoes)


@dataclass
class Assessment:
    run_id: int | None
    year: int
    month: int | None
    scheme: Scheme
    results: list[InstResult]
    result_hash: str
    natures: list[str]

    @property
    def label(self) -> str:
        return f"{self.year}-{self.month:02d}" if self.month else f"{self.year} 年度"


def months_of(year: int, month: int | None) -> tuple[str, str]:
    if not (1900 <= int(year) <= 2999):
        raise store.SupervisionError(f"--year must be a year like 2026, got {year}")
    if month is not None and not (1 <= int(month) <= 12):
        raise store.SupervisionError(f"--month must be 1..12, got {month}")
    if month:
        p = f"{int(year):04d}-{int(month):02d}"
        return p, p
    return f"{int(year):04d}-01", f"{int(year):04d}-12"


def _d(x) -> Decimal:
    return Decimal(0) if x is None else Decimal(str(x))


def _ratio(a: Decimal, b: Decimal, scale: Decimal = Decimal(1), q: Decimal = Q4) -> Decimal | None:
    if not b:
        return None
    return (a * scale / b).quantize(q, ROUND_HALF_UP)


def gather(con: duckdb.DuckDBPyConnection, first: str, last: str) -> tuple[list[InstResult], dict, list[str]]:
    """Measures per institution; also the final findings per institution and nature (veto evidence)."""
    args = [first, last]
    levels = dict(con.execute(f"""SELECT fixmedins_code, max({_LEVEL_SQL}) FROM mdtrt_d GROUP BY 1""").fetchall())
    fund = con.execute(
        """SELECT fixmedins_code, strftime(setl_time, '%Y-%m') AS p, sum(fund_pay_sumamt) FROM setl_d
           WHERE coalesce(refd_setl_flag, '0') <> '1' AND strftime(setl_time, '%Y-%m') BETWEEN ? AND ?
           GROUP BY 1, 2""",
        args,
    ).fetchall()
    final = con.execute(
        """SELECT f.fixmedins_code, s.period, coalesce(f.nature, '其他'), f.finding_id, f.flagged_amt, i.amount
           FROM deduction_items i JOIN deduction_statements s USING (statement_id) JOIN findings f USING (finding_id)
           WHERE s.period BETWEEN ? AND ? ORDER BY f.fixmedins_code, f.finding_id""",
        args,
    ).fetchall()
    found = dict(
        con.execute(
            """SELECT fixmedins_code, count(*) FROM findings WHERE stage = 'post_hoc' AND status <> 'superseded'
           AND period BETWEEN ? AND ? GROUP BY 1""",
            args,
        ).fetchall()
    )
    appeals = {
        r[0]: (r[1], r[2])
        for r in con.execute(
            """SELECT f.fixmedins_code, count(*) FILTER (WHERE e.action = 'appeal'), count(*) FILTER (WHERE e.action = 'overturn')
           FROM finding_events e JOIN findings f USING (finding_id)
           WHERE f.stage = 'post_hoc' AND f.period BETWEEN ? AND ? AND e.action IN ('appeal', 'overturn')
           GROUP BY 1""",
            args,
        ).fetchall()
    }
    tips = dict(
        con.execute(
            """SELECT fixmedins_code, count(*) FROM tips WHERE status IN ('属实', '奖励已发放') AND fixmedins_code IS NOT NULL
           AND strftime(received_on, '%Y-%m') BETWEEN ? AND ? GROUP BY 1""",
            args,
        ).fetchall()
    )
    codes = sorted({r[0] for r in fund} | {r[0] for r in final} | set(found) | set(tips))
    natures = list(NATURES) + sorted({r[2] for r in final} - set(NATURES))
    by_nature: dict[tuple[str, str], list[str]] = {}
    out = {}
    for c in codes:
        m: dict[str, Any] = {  # a count (int) or an amount (Decimal) per measure
            "fund_pay": Decimal(0),
            "findings": int(found.get(c, 0)),
            "violations": 0,
            "violation_amount": Decimal(0),
            "deductions": Decimal(0),
        }
        for n in natures:
            m[f"count.{n}"], m[f"amount.{n}"] = 0, Decimal(0)
        m["appeals_filed"], m["appeals_won"] = (int(x) for x in appeals.get(c, (0, 0)))
        m["tips_founded"] = int(tips.get(c, 0))
        out[c] = InstResult(c, int(levels.get(c) or 0), m, {})
    first_y, first_m = int(first[:4]), int(first[5:])
    last_m = int(last[5:])
    for c in codes:
        out[c].monthly = {
            f"{first_y:04d}-{k:02d}": {
                "violations": 0,
                "violation_amount": Decimal(0),
                "deductions": Decimal(0),
                "fund_pay": Decimal(0),
            }
            for k in range(first_m, last_m + 1)
        }
    for c, p, amt in fund:
        out[c].measures["fund_pay"] += _d(amt)
        out[c].monthly[p]["fund_pay"] += _d(amt)
    for c, p, nature, fid, flagged, ded in final:
        m, mo = out[c].measures, out[c].monthly[p]
        m["violations"] += 1
        m["violation_amount"] += _d(flagged)
        m["deductions"] += _d(ded)
        m[f"count.{nature}"] += 1
        m[f"amount.{nature}"] += _d(ded)
        mo["violations"] += 1
        mo["violation_amount"] += _d(flagged)
        mo["deductions"] += _d(ded)
        by_nature.setdefault((c, nature), []).append(fid)
        by_nature.setdefault((c, "*"), []).append(fid)
        if _d(ded) > 0:
            by_nature.setdefault((c, "$"), []).append(fid)
    for r in out.values():
        m = r.measures
        m["per_10k_fund"] = _ratio(m["violation_amount"], m["fund_pay"], Decimal(10000))
        m["deduction_rate"] = _ratio(m["deductions"], m["fund_pay"], q=Decimal("0.000001"))
        m["appeal_win_rate"] = _ratio(Decimal(m["appeals_won"]), Decimal(m["appeals_filed"]))
    return [out[c] for c in codes], by_nature, natures


from ..semantics import inst_level as _inst_level  # noqa: E402

_LEVEL_SQL = _inst_level.sql("hosp_lv")


def indicator_points(ind, value) -> Decimal:
    """The points of one indicator: the whole weight at ``full_at`` or better, 0 at ``zero_at`` or
    worse, linear in between, rounded half-up to 0.01. No value (no fund payment, no appeal): the
    whole weight (nothing to hold against the institution)."""
    if value is None:
        return ind.weight.quantize(CENT, ROUND_HALF_UP)
    v, full, zero = _d(value), ind.full_at, ind.zero_at
    if full < zero:
        frac = Decimal(1) if v <= full else Decimal(0) if v >= zero else (zero - v) / (zero - full)
    else:
        frac = Decimal(1) if v >= full else Decimal(0) if v <= zero else (v - zero) / (full - zero)
    return (ind.weight * frac).quantize(CENT, ROUND_HALF_UP)


def _veto_met(v, value) -> bool:
    if value is None:
        return False
    return _d(value) >= v.value if v.op == ">=" else _d(value) > v.value


def _veto_findings(v, code: str, by_nature: dict) -> list[str]:
    """The findings that make up the measure the veto tested."""
    if v.measure.startswith(("count.", "amount.")):
        key = v.measure.split(".", 1)[1]
        ids = by_nature.get((code, key), [])
        return ids if v.measure.startswith("count.") else [f for f in ids if f in set(by_nature.get((code, "$"), []))]
    if v.measure in ("violations", "violation_amount", "per_10k_fund"):
        return by_nature.get((code, "*"), [])
    if v.measure in ("deductions", "deduction_rate"):
        return by_nature.get((code, "$"), [])
    return []


def score(results: list[InstResult], sch: Scheme, by_nature: dict) -> None:
    for r in results:
        r.points = {i.id: indicator_points(i, r.measures.get(i.measure)) for i in sch.indicators}
        r.score = sum(r.points.values(), Decimal(0)).quantize(CENT, ROUND_HALF_UP)
        r.grade = next(g for g, ms in sch.grades if r.score >= ms)
        r.vetoes = [
            (v.id, v.name, r.measures.get(v.measure), sorted(_veto_findings(v, r.code, by_nature)))
            for v in sch.vetoes
            if _veto_met(v, r.measures.get(v.measure))
        ]
        if r.vetoes:
            r.grade = sch.veto_grade
    # rank within the level: not vetoed before vetoed, then the score; ties share a rank (1, 1, 3)
    for lv in {r.level for r in results}:
        peers = [r for r in results if r.level == lv]
        for r in peers:
            r.rank = 1 + sum(1 for o in peers if (o.vetoed, -o.score) < (r.vetoed, -r.score))
            r.n_in_level = len(peers)
    results.sort(key=lambda r: (-r.level, r.rank, r.code))


def _jsonable(x):
    if isinstance(x, Decimal):
        return str(x)
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def result_hash(results: list[InstResult], sch: Scheme) -> str:
    payload = [
        {
            "code": r.code,
            "level": r.level,
            "score": str(r.score),
            "grade": r.grade,
            "rank": r.rank,
            "measures": _jsonable(r.measures),
            "points": _jsonable(r.points),
            "monthly": _jsonable(r.monthly),
            "vetoes": _jsonable(r.vetoes),
        }
        for r in results
    ]
    text = json.dumps(
        {"scheme": sch.hash, "results": payload}, ensure_ascii=False, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(text.encode()).hexdigest()


def assess(
    con: duckdb.DuckDBPyConnection,
    sch: Scheme,
    year: int,
    month: int | None = None,
    by: str = "medaudit",
    save: bool = True,
) -> Assessment:
    """Compute and (``save``) store one assessment run in one transaction, logged."""
    first, last = months_of(year, month)
    results, by_nature, natures = gather(con, first, last)
    score(results, sch, by_nature)
    h = result_hash(results, sch)
    a = Assessment(None, int(year), month, sch, results, h, natures)
    if not save:
        return a
    with store.transaction(con):
        ev = store.log(
            con,
            by,
            "assess",
            f"{first}..{last}",
            f"方案 {sch.name} {sch.version}",
            {
                "scheme_hash": sch.hash,
                "result_hash": h,
                "institutions": len(results),
                "vetoed": [r.code for r in results if r.vetoed],
            },
        )
        a.run_id = con.execute(
            """INSERT INTO assessment_runs (year, month, scheme_name, scheme_version, scheme_hash, scheme_json, result_hash,
                                            n_institutions, event_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING run_id""",
            [int(year), month, sch.name, sch.version, sch.hash, sch.json(), h, len(results), ev],
        ).fetchall()[0][0]
        if results:
            con.executemany(
                "INSERT INTO assessment_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    [
                        a.run_id,
                        r.code,
                        r.level,
                        r.score,
                        r.grade,
                        r.vetoed,
                        r.rank,
                        r.n_in_level,
                        json.dumps(
                            _jsonable({"measures": r.measures, "monthly": r.monthly}),
                            ensure_ascii=False,
                            sort_keys=True,
                        ),
                        json.dumps(_jsonable(r.points), sort_keys=True),
                    ]
                    for r in results
                ],
            )
        rows = [
            [a.run_id, r.code, vid, vname, str(val), fid]
            for r in results
            for vid, vname, val, fids in r.vetoes
            for fid in (fids or [None])
        ]
        if rows:
            con.executemany("INSERT INTO assessment_vetoes VALUES (?, ?, ?, ?, ?, ?)", rows)
    return a


def now():
    return lifecycle.wall_now()
