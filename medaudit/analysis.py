"""In-process analysis (事中分析, 水位分析): the numbers behind profiling, per institution,
department or doctor over a period, with each value's percentile among peers.

:func:`analyze` builds the screened lines once (:func:`medaudit.engine.prepare_lines`: the
settled lines of ``post_hoc`` by default, open stays with ``in_process``), a visit table of
them (:func:`prepare`), and then one set-based query per level (:func:`level_rows`): per
entity the period's figures, the same figures per month (the trend), the pool of every entity
per month and overall, and the percentiles, all in one ``GROUPING SETS`` pass. No Python loop
runs per entity.

**Definitions** (one line counts in at most one share; amounts are net line amounts, refunds
subtracted, ``det_item_fee_sumamt`` less refunds):

- *visits*: visits with at least one screened line whose start date (``begntime``) lies in the
  period; *stays*: the inpatient ones (``med_type`` starting with 2).
- *total*: the sum of the lines' net amounts; *fund*: the sum of their deductible amounts
  (``amt - fulamt_ownpay_amt``, 0 for class C or switched to self-pay), as rule-semantics.md
  defines ``deductible``.
- *drug share* 药占比: lines of ``list_type`` 101 (western and patent drugs) and 102 (herbal)
  over total; *consumable share* 耗材占比: ``list_type`` 301 over total. The three class shares
  count only lines of another ``list_type`` (items, 201), by ``med_chrgitm_type``:
  *examination and lab* 检查检验占比 classes 03 and 04; *treatment* 治疗占比 classes 05
  (treatment) and 06 (surgery); *bed and nursing* 床位护理占比 classes 01 (bed) and 07
  (nursing). Consultation (02), general care (12), registration (13), other (14) and lines
  without a class are in no share, so the shares need not add up to 100%.
- *cost per visit* 次均费用: total / visits. *Cost per bed day* 床日费用: the total of the stays
  with a length of stay / their bed days. *Mean LOS* 平均住院日: the mean length of stay of those
  stays (``ipt_days``, else discharge date minus admission date, at least 1; open stays have
  none). *15-day readmission rate* 15天再入院率: stays that are readmissions by the defaults of
  the ``readmission`` rule type (0-15 days after a discharge from the same institution, same
  3-character main diagnosis, Z51 stays not counted; the earlier stay may lie outside the
  period) over stays. (``peer_outlier``'s readmission rate counts any diagnosis.)
- *entities*: ``institution`` (``fixmedins_code``); ``department`` (``dscg_dept_codg``, else
  ``adm_dept_codg``, else the ordering department of the visit's largest line, within its
  institution); ``doctor`` (``chfpdr_code``, else the ordering doctor of the largest line,
  within the institution; the doctor's department is the one of most of its visits in the
  period, ties to the smallest code). Visits without a department (doctor) are left out at that
  level. With ``by_diag`` an entity is split by diagnosis group (the first 3 characters of the
  main diagnosis, upper case, dots removed).
- *minimum denominators*: a share or cost per visit needs ``min_visits`` visits (default 30);
  cost per bed day, mean LOS and the readmission rate need ``min_stays`` stays with the
  denominator they use (default 30). Below it the value is empty; the denominator is always
  given beside it. Visits, stays, total and fund have no minimum.
- *peers*: entities of institutions of the same level (0-3); at department level with the same
  department code; at doctor level with the same main department code; with ``by_diag`` in the
  same diagnosis group. Filters (period, med_type group, level, diagnosis prefix) choose the
  visits before anything is counted; ``institution`` only chooses the rows shown (the peers
  stay every institution's).
- *percentile* 百分位: ``100 x (rank - 1) / (n - 1)`` where the rank is the value's place in
  ascending order among the peers that have a value (ties share the lowest rank; the same as
  SQL ``percent_rank``): the lowest peer is 0, the highest 100. A peer group of fewer than
  ``min_peers`` entities with a value (default 5) gives no percentile.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import duckdb

from .engine import prepare_lines
from .types.base import icd, live_visits
from .types.readmission import RULE_TYPE as READMISSION, excluded_condition, pair_condition

LEVELS = ("institution", "department", "doctor")
MED_TYPE_GROUPS = ("inpatient", "outpatient")
STAGES = ("post_hoc", "in_process")


@dataclass(frozen=True)
class Metric:
    key: str
    en: str
    zh: str
    kind: str  # count | money | share | days
    denom: str  # column holding its denominator ('' none)
    minimum: str  # '' | 'min_visits' | 'min_stays'
    num: str  # SQL over the aggregate columns: the value (before the minimum)


#: every column of the table, in order (the SQL below uses these keys as column names)
METRICS: tuple[Metric, ...] = (
    Metric("visits", "visits", "就诊人次", "count", "", "", "visits"),
    Metric("stays", "inpatient stays", "住院人次", "count", "", "", "stays"),
    Metric("total", "total amount", "总费用", "money", "visits", "", "total"),
    Metric("fund", "fund (deductible)", "医保范围内金额", "money", "visits", "", "fund"),
    Metric("drug_share", "drug share", "药占比", "share", "visits", "min_visits", "drug_amt / nullif(total, 0)"),
    Metric(
        "exam_lab_share",
        "exam & lab share",
        "检查检验占比",
        "share",
        "visits",
        "min_visits",
        "exlab_amt / nullif(total, 0)",
    ),
    Metric(
        "consumable_share",
        "consumable share",
        "耗材占比",
        "share",
        "visits",
        "min_visits",
        "cons_amt / nullif(total, 0)",
    ),
    Metric(
        "treatment_share",
        "treatment share",
        "治疗占比",
        "share",
        "visits",
        "min_visits",
        "treat_amt / nullif(total, 0)",
    ),
    Metric(
        "bed_nursing_share",
        "bed & nursing share",
        "床位护理占比",
        "share",
        "visits",
        "min_visits",
        "bednurse_amt / nullif(total, 0)",
    ),
    Metric(
        "cost_per_visit", "cost per visit", "次均费用", "money", "visits", "min_visits", "total / nullif(visits, 0)"
    ),
    Metric(
        "cost_per_bed_day",
        "cost per bed day",
        "床日费用",
        "money",
        "los_stays",
        "min_stays",
        "los_amt / nullif(bed_days, 0)",
    ),
    Metric(
        "mean_los",
        "mean length of stay",
        "平均住院日",
        "days",
        "los_stays",
        "min_stays",
        "bed_days / nullif(los_stays, 0)",
    ),
    Metric(
        "readmission_rate",
        "15-day readmission",
        "15天再入院率",
        "share",
        "stays",
        "min_stays",
        "readmits / nullif(stays, 0)",
    ),
)
METRIC = {m.key: m for m in METRICS}


class AnalysisError(ValueError):
    """Bad options (a period or filter that cannot be read): the message names the option."""


@dataclass(frozen=True)
class Period:
    lo: dt.date | None  # first day (inclusive), None = from the start
    hi: dt.date | None  # last day (inclusive), None = to the end
    label: str


def _month(s: str, opt: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d{4})-(0[1-9]|1[0-2])", s.strip())
    if not m:
        raise AnalysisError(f"{opt} {s!r} is not a month written YYYY-MM (e.g. 2026-03)")
    return int(m[1]), int(m[2])


def _month_end(y: int, m: int) -> dt.date:
    return (dt.date(y + (m == 12), m % 12 + 1, 1)) - dt.timedelta(days=1)


def _day(s: str, opt: str, end: bool) -> dt.date:
    s = s.strip()
    if re.fullmatch(r"\d{4}-\d{2}", s):
        y, m = _month(s, opt)
        return _month_end(y, m) if end else dt.date(y, m, 1)
    try:
        return dt.date.fromisoformat(s)
    except ValueError:
        raise AnalysisError(f"{opt} {s!r} is not a date written YYYY-MM-DD or a month YYYY-MM") from None


def parse_period(
    period: str | None = None,
    quarter: str | None = None,
    year: str | None = None,
    date_from: str | None = None,
    date_to: str | None = None,
) -> Period:
    """One of: ``period`` (a month YYYY-MM), ``quarter`` (2026Q1), ``year`` (2026), or
    ``date_from``/``date_to`` (YYYY-MM-DD or YYYY-MM, either may be left open); none: every visit."""
    given = [n for n, v in (("--period", period), ("--quarter", quarter), ("--year", year)) if v]
    if date_from or date_to:
        given.append("--from/--to")
    if len(given) > 1:
        raise AnalysisError(f"give one period, not {' and '.join(given)}")
    if period:
        y, m = _month(period, "--period")
        return Period(dt.date(y, m, 1), _month_end(y, m), f"{y}-{m:02d}")
    if quarter:
        q = re.fullmatch(r"(\d{4})\s*[Qq]([1-4])", quarter.strip())
        if not q:
            raise AnalysisError(f"--quarter {quarter!r} is not a quarter written YYYYQn (e.g. 2026Q1)")
        y, n = int(q[1]), int(q[2])
        return Period(dt.date(y, 3 * n - 2, 1), _month_end(y, 3 * n), f"{y}Q{n}")
    if year:
        if not re.fullmatch(r"\d{4}", year.strip()):
            raise AnalysisError(f"--year {year!r} is not a year written YYYY (e.g. 2026)")
        y = int(year)
        return Period(dt.date(y, 1, 1), dt.date(y, 12, 31), str(y))
    if date_from or date_to:
        lo = _day(date_from, "--from", False) if date_from else None
        hi = _day(date_to, "--to", True) if date_to else None
        if lo and hi and lo > hi:
            raise AnalysisError(f"--from {date_from} is after --to {date_to}")
        return Period(lo, hi, f"{lo or '…'} – {hi or '…'}")
    return Period(None, None, "all")


@dataclass(frozen=True)
class Options:
    level: str = "institution"
    period: Period = Period(None, None, "all")
    stage: str = "post_hoc"
    institution: str | None = None  # rows shown (peers stay everyone's)
    hosp_level: int | None = None  # 0..3
    med_type_group: str | None = None  # inpatient | outpatient
    diag_prefix: str | None = None
    by_diag: bool = False
    min_visits: int = 30
    min_stays: int = 30
    min_peers: int = 5

    def check(self) -> None:
        if self.level not in LEVELS:
            raise AnalysisError(f"--level must be {', '.join(LEVELS)}, got {self.level!r}")
        if self.stage not in STAGES:
            raise AnalysisError(f"--stage must be post_hoc or in_process, got {self.stage!r}")
        if self.med_type_group is not None and self.med_type_group not in MED_TYPE_GROUPS:
            raise AnalysisError(f"--med-type-group must be inpatient or outpatient, got {self.med_type_group!r}")
        if self.hosp_level is not None and self.hosp_level not in (0, 1, 2, 3):
            raise AnalysisError(f"--hosp-level must be 0, 1, 2 or 3, got {self.hosp_level!r}")
        if self.diag_prefix is not None and not re.fullmatch(r"[A-Za-z0-9.]{1,10}", self.diag_prefix.strip()):
            raise AnalysisError(f"--diag-prefix {self.diag_prefix!r} is not an ICD-10 prefix (letters, digits, dots)")
        for name in ("min_visits", "min_stays"):
            if getattr(self, name) < 1:
                raise AnalysisError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.min_peers < 2:
            raise AnalysisError(f"--min-peers must be at least 2, got {self.min_peers}")


# ---------------------------------------------------------------------------- SQL


def _readmission_defaults() -> tuple[str, str, str, str]:
    """The readmission type's defaults as SQL literals (constants of the code, checked)."""
    gap = int(READMISSION.param("max_gap_days").default)
    same = "TRUE" if READMISSION.param("same_institution").default else "FALSE"
    n = int(READMISSION.param("same_diag_prefix_len").default)
    pre = list(READMISSION.param("exclude_diag_prefixes").default)
    assert all(re.fullmatch(r"[A-Z0-9.]+", p) for p in pre)
    return str(gap), same, str(n), "[" + ", ".join(f"'{p}'" for p in pre) + "]"


def prepare(con: duckdb.DuckDBPyConnection, opts: Options) -> int:
    """Screened lines of the stage, then ``an_v``: one row per visit in the period and filters,
    with its amounts by share, length of stay and readmission flag. Returns the visits."""
    opts.check()
    prepare_lines(con, opts.stage)
    gap, same, plen, excl = _readmission_defaults()
    where: list[str] = ["TRUE"]
    args: list[object] = []
    if opts.period.lo:
        where.append("v.begin_date >= ?")
        args.append(opts.period.lo)
    if opts.period.hi:
        where.append("v.begin_date <= ?")
        args.append(opts.period.hi)
    if opts.hosp_level is not None:
        where.append("v.inst_level = ?")
        args.append(int(opts.hosp_level))
    if opts.med_type_group:
        where.append("v.inpatient = ?")
        args.append(opts.med_type_group == "inpatient")
    if opts.diag_prefix:
        where.append(f"starts_with({icd('v.main_diag')}, {icd('?')})")
        args.append(opts.diag_prefix)
    items = "coalesce(list_type, '') NOT IN ('101', '102', '301')"
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE an_v AS
        WITH vl AS (
            SELECT mdtrt_id, sum(amt) AS total, sum(deductible) AS fund,
                   coalesce(sum(amt) FILTER (WHERE list_type IN ('101', '102')), 0) AS drug_amt,
                   coalesce(sum(amt) FILTER (WHERE list_type = '301'), 0) AS cons_amt,
                   coalesce(sum(amt) FILTER (WHERE {items} AND med_chrgitm_type IN ('03', '04')), 0) AS exlab_amt,
                   coalesce(sum(amt) FILTER (WHERE {items} AND med_chrgitm_type IN ('05', '06')), 0) AS treat_amt,
                   coalesce(sum(amt) FILTER (WHERE {items} AND med_chrgitm_type IN ('01', '07')), 0) AS bednurse_amt,
                   arg_max(bilg_dr_code, amt) FILTER (WHERE bilg_dr_code IS NOT NULL) AS line_dr,
                   arg_max(bilg_dept_codg, amt) FILTER (WHERE bilg_dept_codg IS NOT NULL) AS line_dept
            FROM lines GROUP BY mdtrt_id),
        live AS (SELECT * FROM {live_visits("visits", "diag", "setl_d")}),
        sel AS (SELECT v.* FROM live v WHERE v.mdtrt_id IN (SELECT mdtrt_id FROM vl) AND {" AND ".join(where)}),
        readm AS (   -- the readmission type's defaults (its own SQL pieces)
            SELECT DISTINCT c.mdtrt_id FROM sel c JOIN live a ON {pair_condition("c", "a", gap, same, plen)}
            WHERE c.inpatient AND NOT {excluded_condition("c", excl, diag="diag")})
        SELECT v.mdtrt_id, v.fixmedins_code, v.inst_level, v.inpatient, v.los,
               strftime(v.begin_date, '%Y-%m') AS month,
               nullif(left({icd("v.main_diag")}, 3), '') AS diag_group,
               coalesce(v.dscg_dept_codg, v.adm_dept_codg, vl.line_dept) AS dept,
               coalesce(v.chfpdr_code, vl.line_dr) AS dr,
               vl.total, vl.fund, vl.drug_amt, vl.cons_amt, vl.exlab_amt, vl.treat_amt, vl.bednurse_amt,
               v.mdtrt_id IN (SELECT mdtrt_id FROM readm) AS readmitted
        FROM sel v JOIN vl USING (mdtrt_id)
        """,
        args,
    )
    return con.execute("SELECT count(*) FROM an_v").fetchall()[0][0]


def _level_sql(opts: Options) -> str:
    """The one query of a level (every identifier below is a constant of this module)."""
    ent = {"institution": [], "department": ["dept"], "doctor": ["dr"]}[opts.level]
    keys = ["fixmedins_code"] + ent + (["diag_group"] if opts.by_diag else [])
    notnull = " AND ".join(f"{k} IS NOT NULL" for k in ent) or "TRUE"
    k = ", ".join(keys)
    main_dept = "md.main_dept" if opts.level == "doctor" else "dept" if opts.level == "department" else "NULL"
    peer = ["CAST(inst_level AS VARCHAR)"]
    if opts.level != "institution":
        peer.append("coalesce(main_dept, '')")
    if opts.by_diag:
        peer.append("coalesce(diag_group, '')")
    values = []
    for m in METRICS:
        expr = f"CAST({m.num} AS DOUBLE)"
        if m.minimum:
            expr = f"CASE WHEN {m.denom} >= {int(getattr(opts, m.minimum))} THEN {expr} END"
        values.append(f"{expr} AS {m.key}")
    pct = []
    for m in METRICS:
        w = f"PARTITION BY peer_key, {m.key} IS NULL"
        pct.append(f"""CASE WHEN {m.key} IS NOT NULL AND count({m.key}) OVER ({w}) >= {int(opts.min_peers)}
                            THEN 100 * percent_rank() OVER ({w} ORDER BY {m.key}) END AS p_{m.key},
                       count({m.key}) OVER ({w}) AS peers_{m.key}""")
    md = ""
    if opts.level == "doctor":
        md = f"""md AS (SELECT {k}, arg_min(dept, (-n, dept)) AS main_dept
                        FROM (SELECT {k}, dept, count(*) AS n FROM e WHERE dept IS NOT NULL GROUP BY ALL)
                        GROUP BY ALL),"""
    join_md = f"LEFT JOIN md USING ({k})" if opts.level == "doctor" else ""
    return f"""
        WITH e AS (SELECT * FROM an_v WHERE {notnull}),
        {md}
        agg AS (
            SELECT {k}, month, GROUPING({k}) AS g_ent, GROUPING(month) AS g_month,
                   max(inst_level) AS inst_level,
                   count(*) AS visits, count(*) FILTER (WHERE inpatient) AS stays,
                   count(*) FILTER (WHERE inpatient AND los IS NOT NULL) AS los_stays,
                   coalesce(sum(los) FILTER (WHERE inpatient), 0) AS bed_days,
                   sum(total) AS total, sum(fund) AS fund, sum(drug_amt) AS drug_amt, sum(cons_amt) AS cons_amt,
                   sum(exlab_amt) AS exlab_amt, sum(treat_amt) AS treat_amt, sum(bednurse_amt) AS bednurse_amt,
                   coalesce(sum(total) FILTER (WHERE inpatient AND los IS NOT NULL), 0) AS los_amt,
                   count(*) FILTER (WHERE readmitted) AS readmits
            FROM e GROUP BY GROUPING SETS (({k}), ({k}, month), (month), ())),
        vals AS (
            SELECT a.*, {main_dept} AS main_dept, {", ".join(values)}
            FROM agg a {join_md}),
        keyed AS (SELECT *, CASE WHEN g_ent = 0 THEN concat_ws('|', {", ".join(peer)}) END AS peer_key FROM vals)
        SELECT * EXCLUDE (peer_key), peer_key,
               {", ".join(pct)}
        FROM keyed WHERE g_ent = 0 AND g_month = 1
        UNION ALL BY NAME
        SELECT * FROM keyed WHERE NOT (g_ent = 0 AND g_month = 1)
    """


@dataclass
class Analysis:
    opts: Options
    keys: list[str]  # entity key columns (fixmedins_code, dept / dr, diag_group)
    rows: list[dict]  # one per entity over the period (with p_<metric> and peers_<metric>)
    months: list[dict]  # one per entity and month
    pool_months: list[dict]  # every entity together, per month
    pool: dict | None  # every entity together over the period
    names: dict = field(default_factory=dict)  # (kind, inst, code) -> label

    def entity_code(self, r: dict) -> str:
        """The code a user gives to ``--highlight``: the institution, department or doctor code."""
        return {"institution": r.get("fixmedins_code"), "department": r.get("dept"), "doctor": r.get("dr")}[
            self.opts.level
        ] or ""

    def entity_label(self, r: dict) -> str:
        lv = self.opts.level
        inst = self.names.get(("institution", r.get("fixmedins_code"), None), r.get("fixmedins_code") or "")
        if lv == "institution":
            s = inst
        elif lv == "department":
            s = f"{self.names.get(('dept', r['fixmedins_code'], r['dept']), r['dept'])} @ {r['fixmedins_code']}"
        else:
            s = f"{self.names.get(('doctor', r['fixmedins_code'], r['dr']), r['dr'])} @ {r['fixmedins_code']}"
            if r.get("main_dept"):
                s += f" / {r['main_dept']}"
        if self.opts.by_diag:
            s += f" [{r.get('diag_group') or '-'}]"
        return s

    def highlighted(self, code: str | None) -> list[dict]:
        """The rows of ``code``: an entity code (a department code names that department at every
        institution), or ``INSTITUTION/CODE`` for one institution's."""
        if not code:
            return []
        inst, _, ent = code.rpartition("/")
        return [r for r in self.rows if self.entity_code(r) == ent and (not inst or r.get("fixmedins_code") == inst)]


def _records(cur) -> list[dict]:
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


def level_rows(con: duckdb.DuckDBPyConnection, opts: Options) -> Analysis:
    """One level over the visits of :func:`prepare` (``an_v``): one query."""
    opts.check()
    recs = _records(con.execute(_level_sql(opts)))
    ent = {"institution": [], "department": ["dept"], "doctor": ["dr"]}[opts.level]
    keys = ["fixmedins_code"] + ent + (["diag_group"] if opts.by_diag else [])
    rows, months, pool_months, pool = [], [], [], None
    for r in recs:
        if r["g_ent"] == 0 and r["g_month"] == 1:
            if opts.institution is None or r["fixmedins_code"] == opts.institution:
                rows.append(r)
        elif r["g_ent"] == 0:
            if opts.institution is None or r["fixmedins_code"] == opts.institution:
                months.append(r)
        elif r["g_month"] == 0:
            pool_months.append(r)
        else:
            pool = r
    rows.sort(key=lambda r: (-(r["total"] or 0), *[str(r.get(k) or "") for k in keys]))
    months.sort(key=lambda r: (*[str(r.get(k) or "") for k in keys], r["month"]))
    pool_months.sort(key=lambda r: r["month"])
    return Analysis(opts, keys, rows, months, pool_months, pool)


def attach_names(con: duckdb.DuckDBPyConnection, a: Analysis) -> None:
    """Names beside codes (:mod:`medaudit.names`), for the rows shown."""
    from .names import Names

    nm = Names(con)
    for r in a.rows + a.months:
        inst = r.get("fixmedins_code")
        a.names[("institution", inst, None)] = nm.institution(inst)
        if r.get("dept"):
            a.names[("dept", inst, r["dept"])] = nm.dept(inst, r["dept"])
        if r.get("main_dept"):
            a.names[("dept", inst, r["main_dept"])] = nm.dept(inst, r["main_dept"])
        if r.get("dr"):
            a.names[("doctor", inst, r["dr"])] = nm.doctor(inst, r["dr"])


def analyze(
    con: duckdb.DuckDBPyConnection, opts: Options, levels: tuple[str, ...] | None = None
) -> dict[str, Analysis]:
    """Prepare once, then one query per level (``levels``, default ``opts.level``)."""
    from dataclasses import replace

    prepare(con, opts)
    out = {}
    for lv in levels or (opts.level,):
        a = level_rows(con, replace(opts, level=lv))
        attach_names(con, a)
        out[lv] = a
    return out


# ---------------------------------------------------------------------------- formatting


def fmt(m: Metric, v) -> str:
    """A value as the table shows it (empty: below the minimum denominator, or nothing to divide)."""
    if v is None:
        return "—"
    if m.kind == "count":
        return f"{int(v):,}"
    if m.kind == "money":
        return f"{Decimal(str(v)).quantize(Decimal('0.01')):,}"
    if m.kind == "share":
        return f"{100 * float(v):.1f}%"
    return f"{float(v):.1f}"


def denom_text(a: Analysis, m: Metric, r: dict) -> str:
    """The denominator beside a value: ``n=42`` (``n=12<30`` when below the minimum)."""
    if not m.denom:
        return ""
    n = int(r.get(m.denom) or 0)
    s = (
        f"n={n:,}"
        if m.denom != "los_stays" or m.key != "cost_per_bed_day"
        else f"n={n:,} ({int(r.get('bed_days') or 0):,}d)"
    )
    if m.minimum and n < getattr(a.opts, m.minimum):
        s += f"<{getattr(a.opts, m.minimum)}"
    return s


def pct_text(r: dict, m: Metric) -> str:
    """``P75/9``: the percentile among 9 peers with a value (the entity included)."""
    p = r.get(f"p_{m.key}")
    return "" if p is None else f"P{p:.0f}/{int(r.get(f'peers_{m.key}') or 0)}"


# ---------------------------------------------------------------------------- xlsx


def write_xlsx(a: Analysis, path: Path) -> Path:
    """The table as a workbook: one row per entity (codes and names in separate cells), per metric
    its value, denominator and percentile as number cells; a sheet by month; the definitions."""
    from .xlsx import Cells, workbook

    wb = workbook(path)
    cells = Cells(wb)
    head = wb.add_format({"bold": True, "border": 1, "bg_color": "#DDEBF7", "text_wrap": True, "valign": "top"})
    pctf = wb.add_format({"border": 1, "valign": "top", "num_format": "0.00%"})
    dayf = wb.add_format({"border": 1, "valign": "top", "num_format": "0.0"})
    pf = wb.add_format({"border": 1, "valign": "top", "num_format": "0"})
    id_cols = _id_columns(a)

    def sheet(title: str, rows: list[dict], with_pct: bool, month: bool):
        ws = wb.add_worksheet(title)
        cols: list[str | tuple[str, Metric]] = [*(["month"] if month else []), *(c[0] for c in id_cols)]
        hdr = (["月份 month"] if month else []) + [c[1] for c in id_cols]
        for m in METRICS:
            hdr.append(f"{m.zh} {m.en}")
            cols.append(m.key)
            if m.denom and m.kind != "count" and m.key not in ("total", "fund"):
                hdr.append(f"{m.zh} 分母 n")
                cols.append(("n", m))
            if with_pct:
                hdr.append(f"{m.zh} 百分位 percentile")
                cols.append(("p", m))
                hdr.append(f"{m.zh} 同类数 peers")
                cols.append(("peers", m))
        for j, h in enumerate(hdr):
            ws.write_string(0, j, h, head)
        for i, r in enumerate(rows, start=1):
            for j, c in enumerate(cols):
                if isinstance(c, tuple):
                    kind, m = c
                    if kind == "n":
                        cells.put(ws, i, j, int(r.get(m.denom) or 0))
                    elif kind == "p":
                        v = r.get(f"p_{m.key}")
                        cells.put(ws, i, j, None if v is None else float(v), fmt=pf if v is not None else None)
                    else:
                        cells.put(ws, i, j, int(r.get(f"peers_{m.key}") or 0))
                elif c in METRIC:
                    m, v = METRIC[c], r.get(c)
                    if v is None:
                        cells.put(ws, i, j, None)
                    elif m.kind == "count":
                        cells.put(ws, i, j, int(v))
                    elif m.kind == "share":
                        cells.put(ws, i, j, float(v), fmt=pctf)
                    elif m.kind == "days":
                        cells.put(ws, i, j, float(v), fmt=dayf)
                    else:
                        cells.put(ws, i, j, round(float(v), 2), kind="money")
                else:
                    cells.put(ws, i, j, _id_value(a, r, c))
        ws.freeze_panes(1, len(id_cols) + (1 if month else 0))
        ws.set_row(0, 45)
        ws.set_column(0, len(hdr), 14)

    sheet("分析 analysis", a.rows, True, False)
    sheet("按月 by month", a.months, False, True)
    ws = wb.add_worksheet("口径 definitions")
    o = a.opts
    info = [
        ("层级 level", o.level),
        ("期间 period", o.period.label),
        ("环节 stage", o.stage),
        ("机构 institution", o.institution or "全部 all"),
        ("机构等级 level", "全部 all" if o.hosp_level is None else str(o.hosp_level)),
        ("就诊类型 med_type", o.med_type_group or "全部 all"),
        ("主诊断前缀 diagnosis prefix", o.diag_prefix or ""),
        ("按病种分组 by diagnosis group", "是" if o.by_diag else "否"),
        ("最少就诊 min visits", o.min_visits),
        ("最少住院 min stays", o.min_stays),
        ("最少同类 min peers", o.min_peers),
    ]
    for i, (k, v) in enumerate(info):
        cells.put(ws, i, 0, k)
        cells.put(ws, i, 1, v)
    for i, line in enumerate(_definitions(), start=len(info) + 1):
        cells.put(ws, i, 0, line)
    ws.set_column(0, 0, 40)
    ws.set_column(1, 1, 30)
    wb.close()
    return path


def _id_columns(a: Analysis) -> list[tuple[str, str]]:
    cols = [
        ("fixmedins_code", "机构编码 institution"),
        ("inst_name", "机构名称 name"),
        ("inst_level", "机构等级 level"),
    ]
    if a.opts.level == "department":
        cols += [("dept", "科室编码 department"), ("dept_name", "科室名称 name")]
    if a.opts.level == "doctor":
        cols += [("dr", "医师编码 doctor"), ("dr_name", "医师名称 name"), ("main_dept", "主科室 department")]
    if a.opts.by_diag:
        cols.append(("diag_group", "病种 diagnosis group"))
    return cols


def _strip_code(label: str, code) -> str:
    return label[: -len(f" ({code})")] if code and label.endswith(f" ({code})") else ("" if label == code else label)


def _id_value(a: Analysis, r: dict, c: str):
    inst = r.get("fixmedins_code")
    if c == "inst_name":
        return _strip_code(a.names.get(("institution", inst, None), ""), inst)
    if c == "dept_name":
        return _strip_code(a.names.get(("dept", inst, r.get("dept")), ""), r.get("dept"))
    if c == "dr_name":
        return _strip_code(a.names.get(("doctor", inst, r.get("dr")), ""), r.get("dr"))
    if c == "inst_level":
        return None if r.get("inst_level") is None else int(r["inst_level"])
    return r.get(c)


def _definitions() -> list[str]:
    doc = __doc__.split("**Definitions**", 1)[1]
    return [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n- ", doc) if p.strip()]


# ---------------------------------------------------------------------------- HTML


def _svg_strip(values: list[tuple[str, float, bool]], m: Metric, width: int = 640, height: int = 70) -> str:
    """A box and strip plot of one metric: every entity a dot, the highlighted one red."""
    if not values:
        return "<p class='none'>no entity reaches the minimum denominator</p>"
    xs = sorted(v for _, v, _ in values)
    lo, hi = xs[0], xs[-1]
    span = (hi - lo) or (abs(hi) or 1.0)
    pad = 10

    def X(v: float) -> float:
        return pad + (width - 2 * pad) * ((v - lo) / span if hi != lo else 0.5)

    def q(p: float) -> float:
        h = (len(xs) - 1) * p
        f = math.floor(h)
        return xs[f] + (h - f) * (xs[min(f + 1, len(xs) - 1)] - xs[f])

    q1, med, q3 = q(0.25), q(0.5), q(0.75)
    out = [
        f"<svg width='{width}' height='{height}' role='img'>",
        f"<rect x='{X(q1):.1f}' y='12' width='{max(X(q3) - X(q1), 1):.1f}' height='26' class='box'/>",
        f"<line x1='{X(med):.1f}' x2='{X(med):.1f}' y1='10' y2='40' class='med'/>",
    ]
    for i, (label, v, hl) in enumerate(values):
        y = 25 + ((i * 7919) % 17 - 8)
        cls = "hl" if hl else "dot"
        r = 5 if hl else 3
        out.append(
            f"<circle cx='{X(v):.1f}' cy='{y}' r='{r}' class='{cls}'><title>{html.escape(label)}: "
            f"{html.escape(fmt(m, v))}</title></circle>"
        )
    for label, v, hl in values:
        if hl:  # the label kept inside the picture: left of a dot near the right edge, right of one near the left
            x = X(v)
            anchor = "end" if x > 0.6 * width else "start" if x < 0.4 * width else "middle"
            out.append(
                f"<text x='{x:.1f}' y='54' class='hlt' text-anchor='{anchor}'>{html.escape(label)} "
                f"{html.escape(fmt(m, v))}</text>"
            )
    out.append(f"<text x='{pad}' y='{height - 2}' class='ax'>{html.escape(fmt(m, lo))}</text>")
    out.append(
        f"<text x='{width - pad}' y='{height - 2}' class='ax' text-anchor='end'>{html.escape(fmt(m, hi))}</text>"
    )
    out.append("</svg>")
    return "".join(out)


def _svg_trend(
    months: list[str], series: list[tuple[str, dict, str]], m: Metric, width: int = 640, height: int = 120
) -> str:
    """Lines by month: each series a {month: value} map (gaps where a month has no value)."""
    vals = [v for _, s, _ in series for v in s.values() if v is not None]
    if not months or not vals:
        return "<p class='none'>no month reaches the minimum denominator</p>"
    lo, hi = min(vals + [0.0]), max(vals)
    span = (hi - lo) or 1.0
    padl, padr, top, bot = 70, 30, 10, 25

    def X(i: int) -> float:
        return padl + (width - padl - padr) * (i / (len(months) - 1) if len(months) > 1 else 0.5)

    def Y(v: float) -> float:
        return top + (height - top - bot) * (1 - (v - lo) / span)

    out = [
        f"<svg width='{width}' height='{height}' role='img'>",
        f"<line x1='{padl}' x2='{width - padr}' y1='{Y(lo):.1f}' y2='{Y(lo):.1f}' class='axis'/>",
        f"<text x='{padl - 4}' y='{Y(hi) + 4:.1f}' class='ax' text-anchor='end'>{html.escape(fmt(m, hi))}</text>",
        f"<text x='{padl - 4}' y='{Y(lo):.1f}' class='ax' text-anchor='end'>{html.escape(fmt(m, lo))}</text>",
    ]
    for i, mo in enumerate(months):
        out.append(f"<text x='{X(i):.1f}' y='{height - 6}' class='ax' text-anchor='middle'>{html.escape(mo)}</text>")
    for name, s, cls in series:
        pts: list[list[tuple]] = []
        seg: list[tuple] = []
        for i, mo in enumerate(months):
            v = s.get(mo)
            if v is None:
                if seg:
                    pts.append(seg)
                seg = []
            else:
                seg.append((X(i), Y(v), mo, v))
        if seg:
            pts.append(seg)
        for seg in pts:
            out.append(
                f"<polyline class='{cls}' fill='none' points='"
                + " ".join(f"{x:.1f},{y:.1f}" for x, y, _, _ in seg)
                + "'/>"
            )
            for x, y, mo, v in seg:
                out.append(
                    f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3' class='{cls}'><title>{html.escape(name)} "
                    f"{html.escape(mo)}: {html.escape(fmt(m, v))}</title></circle>"
                )
    out.append("</svg>")
    return "".join(out)


_CSS = """body{font-family:sans-serif;margin:1.5em;color:#222}h1{font-size:1.3em}h2{font-size:1.05em;margin:1.2em 0 .2em}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}
th{background:#eef}td.l{text-align:left}tr.hl td{background:#fde2e2}.box{fill:#dde8f5;stroke:#6a8fbf}
.med{stroke:#1f4e8c;stroke-width:2}.dot{fill:#5b7fb0;opacity:.7}.hl{fill:#d62728;stroke:#fff}
.hlt{font-size:11px;fill:#d62728}.ax{font-size:10px;fill:#666}.axis{stroke:#999}
polyline.ent{stroke:#d62728;stroke-width:2}circle.ent{fill:#d62728}polyline.pool{stroke:#5b7fb0;stroke-width:2}
circle.pool{fill:#5b7fb0}.none{color:#888;font-size:.85em}.note{color:#555;font-size:.85em}"""


def write_html(a: Analysis, path: Path, highlight: str | None = None) -> Path:
    """A self-contained page (inline CSS and SVG, no script, no link): the options, per metric the
    distribution over the entities (box and strip plot, the highlighted entity red) and the trend
    by month (the highlighted entity against every entity together), and the table."""
    o = a.opts
    hl_rows = a.highlighted(highlight)
    hl_keys = {tuple(r.get(k) for k in a.keys) for r in hl_rows}
    esc = html.escape
    parts = [
        f"<!DOCTYPE html><html lang='zh'><head><meta charset='utf-8'><title>medaudit analyze {esc(o.level)} "
        f"{esc(o.period.label)}</title><style>{_CSS}</style></head><body>",
        f"<h1>事中分析 analysis · {esc(o.level)} · {esc(o.period.label)} · {esc(o.stage)}</h1>",
        f"<p class='note'>{len(a.rows):,} entities; min visits {o.min_visits}, min stays {o.min_stays}, "
        f"min peers {o.min_peers}"
        + (f"; filters: institution {esc(o.institution)}" if o.institution else "")
        + (f", level {o.hosp_level}" if o.hosp_level is not None else "")
        + (f", {esc(o.med_type_group)}" if o.med_type_group else "")
        + (f", diagnosis {esc(o.diag_prefix)}" if o.diag_prefix else "")
        + "</p>",
    ]
    if highlight:
        if hl_rows:
            parts.append("<p>highlighted: <b>" + esc("; ".join(a.entity_label(r) for r in hl_rows)) + "</b></p>")
        else:
            parts.append(f"<p class='note'>highlight {esc(highlight)}: no such entity in the table</p>")
    months = sorted({r["month"] for r in a.pool_months if r["month"]})
    parts.append(
        "<p class='note'>per metric: the entities' values (box: quartiles and median; a dot per entity "
        "with a value; <span style='color:#d62728'>red: highlighted</span>), then the trend by month "
        "(<span style='color:#5b7fb0'>blue: all entities together</span>, red: the highlighted entity; "
        "a month below the minimum denominator is a gap)</p>"
    )
    for m in METRICS:
        parts.append(f"<h2>{esc(m.zh)} {esc(m.en)}</h2>")
        pts = [
            (a.entity_label(r), float(r[m.key]), tuple(r.get(k) for k in a.keys) in hl_keys)
            for r in a.rows
            if r.get(m.key) is not None
        ]
        parts.append(_svg_strip(pts, m))
        # a sum (visits, amounts) of all entities together is no yardstick for one entity: with a
        # highlighted entity those trends show the entity alone; ratios show both
        pooled = not hl_rows or m.key not in ("visits", "stays", "total", "fund")
        series = (
            [("all entities 全部", {r["month"]: _f(r.get(m.key)) for r in a.pool_months}, "pool")] if pooled else []
        )
        for r in hl_rows:
            key = tuple(r.get(k) for k in a.keys)
            series.append(
                (
                    a.entity_label(r),
                    {x["month"]: _f(x.get(m.key)) for x in a.months if tuple(x.get(k) for k in a.keys) == key},
                    "ent",
                )
            )
        parts.append(_svg_trend(months, series, m))
    parts.append(
        "<h2>table</h2><table><tr><th>entity</th>"
        + "".join(f"<th>{esc(m.zh)}</th><th>n</th><th>P</th>" for m in METRICS)
        + "</tr>"
    )
    for r in a.rows:
        cls = " class='hl'" if tuple(r.get(k) for k in a.keys) in hl_keys else ""
        parts.append(
            f"<tr{cls}><td class='l'>{esc(a.entity_label(r))}</td>"
            + "".join(
                f"<td>{esc(fmt(m, r.get(m.key)))}</td><td>{esc(denom_text(a, m, r))}</td><td>{esc(pct_text(r, m))}</td>"
                for m in METRICS
            )
            + "</tr>"
        )
    parts.append(
        "</table><h2>definitions</h2><ul class='note'>"
        + "".join(f"<li>{esc(d)}</li>" for d in _definitions())
        + "</ul></body></html>"
    )
    text = "\n".join(parts)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def _f(v):
    return None if v is None else float(v)
