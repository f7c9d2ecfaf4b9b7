"""What every rule type shares: its parameter declarations and the SQL building blocks.

A rule type is a small module in :mod:`medaudit.types` that defines ``RULE_TYPE``, an instance
of :class:`RuleType`. Its docstring is the user documentation (``medaudit rules explain``):
what it flags, why it matters, an example. Its :meth:`RuleType.sql` is ONE set-based query over
all rules of the type at once. It names every table it reads in braces, and the engine formats
it with the tables it hands over (:func:`medaudit.engine.type_names`; an incremental run hands
a person's window as ``{lines}``, pre-alert its request's context): no query reads a table
another module happened to leave on the connection (``tests/test_types_inputs.py`` parses every
query and checks). The engine prepares, before the query runs:

``{lines}``
    the screened lines of the stage (refunds netted, fully refunded lines and refund lines
    removed), one row per fee line with the visit's attributes joined in. Columns: see
    :data:`medaudit.engine.LINE_COLUMNS`.
``{m}``
    the lines matched to the items of this type's rules, already filtered by each rule's
    validity period and scope: every ``lines`` column plus ``rule_key``, ``item_name`` and the
    type's parameters (per item where the rule's table gives them).
``{p}``
    the parameter table itself: ``rule_key, code, prefix, match_all, item_name`` + parameters.
``{r}``
    the rules of this type: ``rule_key, rule_id, rule_version, name, severity, ...``.
``{visits}``, ``{diag}``, ``{deaths}``
    all visits with derived columns, every diagnosis of a visit (main one included), and the
    earliest known death date per person.
``{hilist}``, ``{purchases}``, ``{fee_list_d}``, ``{setl_d}``, ``{setl_list_oprn_d}``
    the loaded catalogue, purchase reports and contract tables (:data:`INPUTS`).

The query returns hit rows, one per (finding, line), with the columns of
:data:`HIT_COLUMNS` (the optional ones may be left out). The engine groups them into findings,
composes the evidence, and settles the money (never twice on one line).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Iterable, NamedTuple

from ..contract import LOAD_ORDER
from ..semantics import (
    MODE_CLAIMS,
    Arg,
    Lit,
    Piece,
    catalogue_cap_sql,
    catalogue_caps_join,
    excess_allocation_sql,
    rule_in_force_sql,
)

#: the tables a type's query may read by a name in braces (``{lines}``), besides ``{m}``, ``{p}``
#: and ``{r}``: what :func:`medaudit.engine.type_names` fills. The engine's screened lines and
#: visit facts, and the loaded tables (the contract's, the catalogue and purchases; not the
#: display names of codes, which only reports read)
INPUTS = ("lines", "visits", "diag", "deaths", *(t for t in LOAD_ORDER if t != "code_names"))

STAGES = ("pre_alert", "in_process", "post_hoc")
SEVERITIES = ("violation", "suspect")
#: the deduction modes: each one's claim is one piece of :mod:`medaudit.semantics` (:data:`MODE_CLAIMS`)
MODES = tuple(MODE_CLAIMS)

#: hit rows: name -> SQL type. ``rule_key``, ``finding_key``, ``role`` are required.
HIT_COLUMNS = {
    "rule_key": "INTEGER",
    "finding_key": "VARCHAR",  # what makes the finding one (usually the visit id)
    "mdtrt_id": "VARCHAR",
    "bkkp_sn": "VARCHAR",  # NULL for a finding about an entity with no lines
    "role": "VARCHAR",  # 'violating' (carries money) or 'related' (context)
    "claim": "DECIMAL(38,12)",  # the deduction this finding claims on the line, by the type's mode (:func:`claim`; 0 for related)
    "ev_head": "VARCHAR",  # the finding's evidence opening, e.g. 患者性别为男
    "ev_line": "VARCHAR",  # this line's part of the evidence (NULL: adds nothing)
    # optional: set for findings about entities rather than visits
    "psn_no": "VARCHAR",
    "fixmedins_code": "VARCHAR",
    "dept_code": "VARCHAR",
    "dr_code": "VARCHAR",
    "period": "VARCHAR",  # YYYY-MM a finding about a month is for (default: its settlement month)
    # optional, excess_qty types: how many of this line's units are beyond the limit (the 明细行 of
    # the report shows it beside quantity and unit price; the claim is what carries money)
    "excess_units": "DECIMAL(18,4)",
    # optional, month-scoped types whose findings are about visits (overtreatment): the month whose
    # peers judged the finding, YYYY-MM (a nightly run keeps the findings of the months it read
    # whole; default: ``period``)
    "peer_month": "VARCHAR",
}


class Hit(NamedTuple):
    """One hit row in Python (:data:`HIT_COLUMNS`, the columns pre-alert reads): what a type's
    in-memory evaluator (:attr:`RuleType.evaluate`) returns."""

    rule_key: int
    finding_key: str
    mdtrt_id: str | None
    bkkp_sn: str
    role: str  # violating | related
    claim: Decimal
    ev_head: str | None
    ev_line: str | None
    psn_no: str | None = None


@dataclass(frozen=True)
class Param:
    """One parameter of a rule type.

    ``per_item`` parameters may also be given as a column of the rule's item table, one value
    per item (the national gender batch gives 男/女 per drug); a table value wins over the
    rule-level value.
    """

    name: str
    kind: str  # int | number | str | choice | str_list | bool
    help: str
    required: bool = False
    default: Any = None
    choices: tuple = ()
    per_item: bool = False
    minimum: float | None = None
    check: Callable[[Any], str | None] | None = None  # extra check: returns a message or None

    def parse(self, value: Any) -> tuple[Any, str | None]:
        """Return (parsed value, error message)."""
        if value is None or value == "":
            return None, None
        k = self.kind
        try:
            if k == "int":
                if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                    raise ValueError
                v: Any = int(str(value).strip())
            elif k == "number":
                from decimal import Decimal

                v = Decimal(str(value).strip())
            elif k == "bool":
                if isinstance(value, bool):
                    v = value
                elif str(value).strip().lower() in ("true", "1", "yes"):
                    v = True
                elif str(value).strip().lower() in ("false", "0", "no"):
                    v = False
                else:
                    raise ValueError
            elif k == "str_list":
                if isinstance(value, (list, tuple)):
                    v = [str(x) for x in value]
                else:
                    v = [x.strip() for x in str(value).split("|") if x.strip()]
            else:
                v = str(value)
        except (ValueError, ArithmeticError):
            return (
                None,
                f"must be {'a whole number' if k == 'int' else 'a number' if k == 'number' else k}, got {value!r}",
            )
        if self.choices and v not in self.choices and not (k == "str_list"):
            shown = " or ".join(str(c) for c in self.choices)
            return None, f"must be {shown}, got {value!r}"
        if self.choices and k == "str_list":
            wrong = [x for x in v if x not in self.choices]
            if wrong:
                return None, f"must list only {', '.join(map(str, self.choices))}, got {wrong[0]!r}"
        if self.minimum is not None and k in ("int", "number") and v < self.minimum:
            return None, f"must be at least {self.minimum:g}, got {value!r}"
        if self.check:
            msg = self.check(v)
            if msg:
                return None, msg
        return v, None


@dataclass(frozen=True)
class Reach:
    """How far beyond its own visit a rule of a type looks: what a nightly (incremental) run must
    read again so that its findings equal a full re-screen (:mod:`medaudit.incremental`).

    ``scope``
        ``person`` (the default): a finding depends only on the person's own visits, and of
        those only on the ones within ``days`` days of it (0: the visit alone, or visits whose
        dates overlap it); ``whole_months`` widens that to the calendar months the person's
        lines fall in (a per-month count). ``month``: a finding depends on every line of its
        calendar month, whoever's (a month's stock, a month's peers). ``all``: on anything
        loaded (an analyst's query that compares visits or months).
    """

    scope: str = "person"  # person | month | all
    days: int = 0
    whole_months: bool = False


def visit_reach(rule: Any) -> Reach:
    """A rule that judges each visit on its own lines, its visit row, its diagnoses and its
    person's death date (every line-level type)."""
    return Reach()


def max_param(rule: Any, name: str, default: int = 0) -> int:
    """The largest value of a parameter over a rule and its items (per-item parameters)."""
    values = [rule.params.get(name)] + [i.params.get(name) for i in rule.items]
    return max([int(v) for v in values if v is not None] or [default])


@dataclass(frozen=True)
class LineLookup:
    """How a type that judges groups of lines (an institution's code in a month) finds, in a
    screen in parts, the few groups that can break its rules before it reads any line
    (``RuleType.line_lookup``).

    ``sums``: a query over ``{lines}`` (one part's) and the type's inputs, grouping them: the
    group's columns and partial sums, which each part writes. ``keys``: a query over ``{sums}``
    (every part's rows: a group's sums are added up here) and the type's inputs, giving the
    groups to read, with the columns ``match`` names. ``match``: each of those columns as SQL over
    a fee line (the columns of ``fee_list_d``). The groups it gives must hold every group the
    type can flag (a superset: a rule counts some of a group's lines, never more): the type then
    runs over those groups' lines only, built as a part's lines are, and flags what it flags over
    every line (``tests/test_screen_parts.py``)."""

    sums: str
    keys: str
    match: dict[str, str]


@dataclass
class RuleType:
    name: str  # e.g. restrict_gender
    title: str  # e.g. 限性别
    nature: str  # 问题性质, e.g. 超支付范围
    mode: str  # deduction mode, one of MODES
    doc: str  # what it flags, why it matters, an example (markdown)
    query: str  # the set-based hit query (see the module doc)
    params: tuple[Param, ...] = ()
    #: the same documentation in Chinese, next to ``doc`` in the type's module (``DOC_ZH``)
    doc_zh: str = ""
    items: str = "required"  # required | optional | none
    default_severity: str = "violation"
    stages: tuple[str, ...] = STAGES
    dedupe_lines: bool = True  # a line matching several items of one rule: once (True) or once per item
    #: judges a person's lines across visits and institutions: at pre_alert the person's stored
    #: lines of the rules' items (other visits, from the database) are part of the check
    person_history: bool = False
    validate: Callable[[dict], str | None] | None = None  # cross-parameter check on rule params
    extra: dict = field(default_factory=dict)
    # builds the query from the database (e.g. from the rules' own SQL) instead of ``query``
    compose: Callable[[dict, Any], str] | None = None
    # run before each run of the type's query, on the screening connection (and a sandbox
    # connection the caller may keep between runs): the sql type runs its rules' own queries here
    prepare: Callable[..., None] | None = None
    #: for a type with ``compose`` or ``prepare``: the names of the columns its rules' own
    #: queries may read from the lines, given the connection and the engine's table names
    #: (None: any column). A full screen leaves out of ``lines`` the spare columns no type
    #: names (:func:`medaudit.engine.slim_columns`); without this, such a type keeps them all
    names_read: Callable[[Any, dict], frozenset[str] | None] | None = None
    #: how far beyond its own visit a rule of the type looks (from the rule's parameters): what a
    #: nightly run re-reads; see :class:`Reach`
    reach: Callable[[Any], Reach] = visit_reach
    #: the type's query in memory, for the pre-alert fast path: ``evaluate(ctx, matched_rows)``
    #: returns :class:`Hit` rows equal to the query's (None: the type runs its SQL at pre-alert).
    #: ``ctx`` is :class:`medaudit.prealert.fast.context.Lines`; the rows are ``{m}`` as dicts.
    evaluate: Callable[[Any, list[dict]], list[Hit]] | None = None
    #: the query's joins hash their right side as written (:func:`medaudit.db.hash_as_written`):
    #: for a query written with the few rows on the right, where DuckDB's estimate of the matched
    #: lines would have it hash the many
    hash_as_written: bool = False
    #: what a type that judges a whole month reads of the lines, when that is less than every
    #: column of every line: name -> a query over ``{lines}`` (and the type's ``{p}``, ``{r}`` and
    #: other inputs) whose rows over a batch are its rows over each part of the persons put
    #: together: lines filtered, or grouped by visit (a visit's lines are all in its person's
    #: part). The type's query reads each as ``{name}``. Wherever the type runs, each is a view
    #: over the lines (:func:`medaudit.engine.line_inputs`), except in a screen too big for one
    #: ``lines``: there each part writes them instead of the lines' columns
    #: (:func:`medaudit.engine._screen_in_parts`). An input named ``lines`` is a prefilter: the
    #: only lines the type can flag or count (its findings are the same over all lines, which
    #: it reads as ``{lines}`` and matched lines everywhere but from the part files, and
    #: ``tests/test_screen_parts.py`` compares the two).
    line_inputs: dict[str, str] = field(default_factory=dict)
    #: in a screen in parts, the groups the type can flag found from each part's sums, and only
    #: their lines read (:class:`LineLookup`), instead of every line its ``line_inputs`` keep
    line_lookup: LineLookup | None = None

    def sql(self, names: dict[str, str], con: Any = None) -> str:
        if self.compose is not None:
            return self.compose(names, con)
        return textwrap.dedent(self.query).format(**names)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)


# ---------------------------------------------------------------------------- SQL blocks


#: what a mode's claim reads of the hit line when the type does not say otherwise: the line's own
#: money by its column names in the type's rows, and the line carries money (a type whose rows mix
#: violating and related lines gives ``carries``, the condition of a violating one)
LINE_MONEY = {"carries": "TRUE", "deductible": "deductible", "amt": "amt", "pric": "pric"}


def mode_claim(mode: str, given: Iterable[str]) -> Piece:
    """The claim piece of ``mode`` (:data:`medaudit.semantics.MODE_CLAIMS`), once the inputs a type
    ``given`` (their names) are checked against it: none it does not read, none it needs missing."""
    piece = MODE_CLAIMS[mode]
    given = set(given)
    unknown = given - set(piece.args)
    missing = [a for a in piece.args if a not in given and a not in LINE_MONEY]
    if unknown or missing:
        raise TypeError(
            f"the claim of mode {mode} reads {', '.join(piece.args)}"
            + (f"; not {', '.join(sorted(unknown))}" if unknown else "")
            + (f"; give {', '.join(missing)}" if missing else "")
        )
    return piece


def claim(mode: str, **inputs: str) -> str:
    """SQL: a hit line's claim under deduction ``mode`` (the type's ``RuleType.mode``), from
    :data:`medaudit.semantics.MODE_CLAIMS`: the type gives, as SQL over its rows, only what varies
    (``carries``: the line is violating; ``excess_units``; ``overcharge`` in yuan; ``rate``), and
    may rename the line's own money (:data:`LINE_MONEY`). E.g. ``claim("whole_line", carries="rn > 1")``,
    ``claim("price_diff", overcharge="excess")``. :func:`claim_of` is the same in Python."""
    piece = mode_claim(mode, inputs)
    texts = {**LINE_MONEY, **inputs}
    # a line that always carries money: the literal TRUE, which the piece folds away
    return piece.build(*(Lit(True) if texts[a] == "TRUE" else Arg(a, texts[a]) for a in piece.args)).sql()


def claim_of(mode: str, m: dict, **inputs: Any) -> Decimal:
    """:func:`claim` in Python, for a type's in-memory evaluator: the values it gives, the line's
    own money from the row ``m`` (``m["deductible"]``...), and the line carries money unless
    ``carries`` says otherwise."""
    piece = mode_claim(mode, inputs)
    return piece.py(*(inputs[a] if a in inputs else True if a == "carries" else m[a] for a in piece.args))


#: each line of ``src`` with its share of its group's excess, latest lines first (``excess_units``,
#: and ``claim``: the ``excess_qty`` mode's claim of those units)
excess_allocation = excess_allocation_sql


#: The standard fact about one line, for evidence: 2026-03-02 收费 1 次，金额 180.00 元
LINE_FACT = "strftime(fee_date, '%Y-%m-%d') || ' 收费 ' || qty(cnt) || ' 次，金额 ' || yuan(amt) || ' 元'"

#: The standard name of a line's item: 项目【子宫造影】(002101030300000)
ITEM_REF = "item_ref(list_type, coalesce(hilist_name, item_name), hilist_code)"


#: SQL scalar: the catalogue (``hilist``) price cap of a line's code for its level on its fee date
hilist_cap = catalogue_cap_sql


def hilist_caps_join(line: str, caps: str = "k") -> str:
    """:func:`medaudit.semantics.catalogue_caps_join` in a type's query: over the type's ``{lines}``
    and ``{hilist}`` (names in braces, filled by :func:`medaudit.engine.type_names`)."""
    return catalogue_caps_join(line, caps, lines="{lines}", hilist="{hilist}")


def price_text(x: str) -> str:
    """SQL: a unit price as a clerk reads it: 2 decimals (180.00), more only when it has them (0.045)."""
    return f"CASE WHEN {x} = round({x}, 2) THEN yuan({x}) ELSE qty({x}) END"


# ---------------------------------------------------------------------------- visit-level blocks
# For the types that take no items (they read ``visits``/``lines`` and ``{p}`` themselves).


#: SQL condition: rule row ``r`` (``r_all`` columns) is in force on ``day`` and its scope admits
#: ``v`` (anything with ``med_type``, ``inst_level``, ``fixmedins_code``): the test the engine
#: applies to matched lines, for types that judge whole visits (:data:`medaudit.semantics.rule_in_force`)
rule_applies = rule_in_force_sql


def icd(x: str) -> str:
    """SQL: an ICD code for prefix comparison: upper case, dots removed (J18.900 -> J18900)."""
    return f"upper(replace(trim({x}), '.', ''))"


#: Visits that took place (history from every batch in the database): a visit whose every
#: settlement was refunded was cancelled and is left out. Adds ``begin_date``, ``end_date`` and
#: ``main_diag`` (the discharge main diagnosis, else the settlement list's main diagnosis).
def live_visits(visits: str = "{visits}", diag: str = "{diag}", setl_d: str = "{setl_d}") -> str:
    """:data:`LIVE_VISITS` over the named tables (the defaults are the types' names in braces,
    which :func:`medaudit.engine.type_names` fills; other callers name their tables)."""
    return f"""(
    SELECT v.*, CAST(v.begntime AS DATE) AS begin_date, CAST(v.endtime AS DATE) AS end_date,
           coalesce(v.dscg_maindiag_code, md.code) AS main_diag
    FROM {visits} v
    LEFT JOIN (SELECT mdtrt_id, min(diag_code) AS code FROM {diag} WHERE is_main GROUP BY mdtrt_id) md USING (mdtrt_id)
    WHERE v.mdtrt_id NOT IN (SELECT mdtrt_id FROM {setl_d} GROUP BY mdtrt_id
                             HAVING bool_and(coalesce(refd_setl_flag, '0') = '1')))"""


LIVE_VISITS = live_visits()


def whole_visit_hits(flagged: str) -> str:
    """Hit rows of mode ``whole_visit``: ``flagged`` has ``rule_key, mdtrt_id, ev_head``, one row
    per (rule, visit); every screened line of the visit is violating, claiming its deductible
    (the amount at risk). The evidence ends with the visit's totals."""
    return f"""
        SELECT f.rule_key, f.mdtrt_id AS finding_key, f.mdtrt_id, l.bkkp_sn, 'violating' AS role,
               {claim("whole_visit", deductible="l.deductible")} AS claim,
               f.ev_head || '；本次就诊费用 ' || count(*) OVER w || ' 条，金额合计 ' || yuan(sum(l.amt) OVER w)
                   || ' 元，其中医保支付范围内 ' || yuan(sum(l.deductible) OVER w) || ' 元' AS ev_head,
               NULL AS ev_line
        FROM {flagged} f JOIN {{lines}} l ON l.mdtrt_id = f.mdtrt_id
        WINDOW w AS (PARTITION BY f.rule_key, f.mdtrt_id)"""


def percentile_terms(vals: str, n: str, pct: str) -> tuple[str, str, str]:
    """SQL for the ``pct``-th percentile (0 < pct < 100, up to 4 decimals) of a sorted list
    ``vals`` of ``n`` values by linear interpolation, as DuckDB's ``quantile_cont``: position
    ``h = (n - 1) * pct / 100``, value ``vals[floor h] + (h - floor h) * (vals[floor h + 1] -
    vals[floor h])`` (0-based). Returns ``(lo, hi, frac)``: the two values it lies between and
    ``(h - floor h) * 1_000_000`` as an exact decimal (no float division). Computed once per peer
    group; :func:`percentile_judge` then decides a member against them."""
    # h * 1_000_000 in 64 bits: exact below 9.2e12 values (Spark SQL has no 128-bit integers)
    num = f"(CAST(({n}) - 1 AS BIGINT) * CAST(round(({pct}) * 10000) AS BIGINT))"
    lo = f"{vals}[CAST({num} // 1000000 AS INTEGER) + 1]"
    hi = f"{vals}[least(CAST({num} // 1000000 AS INTEGER) + 2, {n})]"
    frac = f"CAST({num} % 1000000 AS DECIMAL(18,0))"  # (h - floor h) * 1_000_000
    return lo, hi, frac


def percentile_judge(x: str, lo: str, hi: str, frac: str) -> tuple[str, str]:
    """``(is_above, value)`` from :func:`percentile_terms`: the condition ``x`` strictly above the
    percentile, decided in exact integer and decimal arithmetic (a value equal to the percentile
    is never above it), and the percentile itself for the evidence (12 decimals)."""
    above = f"(({x}) - {lo}) * 1000000 > ({hi} - {lo}) * {frac}"
    value = f"({lo} + xdiv(({hi} - {lo}) * {frac}, 1000000))"
    return above, value


def percentile_above(x: str, vals: str, n: str, pct: str) -> tuple[str, str]:
    """:func:`percentile_terms` and :func:`percentile_judge` in one expression (for one row)."""
    return percentile_judge(x, *percentile_terms(vals, n, pct))


#: ``med_chrgitm_type``: the item classes of a fee line (收费项目类别), the data contract's list
CHRG_CLASSES = {
    "01": "床位费",
    "02": "诊察费",
    "03": "检查费",
    "04": "化验费",
    "05": "治疗费",
    "06": "手术费",
    "07": "护理费",
    "08": "卫生材料费",
    "09": "西药费",
    "10": "中药饮片费",
    "11": "中成药费",
    "12": "一般诊疗费",
    "13": "挂号费",
    "14": "其他费",
}


def check_classes(v: list) -> str | None:
    """A ``str_list`` parameter of item classes: two-digit codes of :data:`CHRG_CLASSES`."""
    wrong = [x for x in v if x not in CHRG_CLASSES]
    return f"must list item classes 01 to 14 (med_chrgitm_type), got {wrong[0]!r}" if wrong else None


def chrg_names(classes: str) -> str:
    """SQL: a list of item classes as a clerk reads it, sorted: 检查费(03)、化验费(04)."""
    case = "CASE c " + " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in CHRG_CLASSES.items()) + " ELSE c END"
    return f"array_to_string(list_transform(list_sort({classes}), lambda c: {case} || '(' || c || ')'), '、')"
