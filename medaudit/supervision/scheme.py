"""The assessment's scoring scheme (考核方案) as YAML data, checked like the rule library.

A scheme::

    name: 定点医疗机构年度考核
    version: "2026.1"            # a changed scheme gets a new version; results record version and hash
    indicators:                  # weights add up to 100: the score is out of 100
      - id: I1
        name: 每万元基金支付违规金额
        measure: per_10k_fund    # see MEASURES
        weight: 40
        full_at: 10              # at or below: the whole weight (at or above when full_at > zero_at)
        zero_at: 200             # at or above: 0 points; linear in between
    grades:                      # the first whose min_score the score reaches, highest first
      - {grade: 优秀, min_score: 90}
      - {grade: 不合格, min_score: 0}
    veto:                        # 一票否决: any condition met makes the grade veto_grade
      - {id: V1, name: 存在经确认的虚构服务, measure: count.虚构服务, at_least: 1}
      - {id: V2, name: 扣款率超过5%, measure: deduction_rate, above: 0.05}
    veto_grade: 不合格

Every problem names the file and the field: ``scheme.yaml: indicators[1].weight: must be a
number, got "四十"``. Numbers are read as exact decimals (``0.05`` is 0.05, not a float).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import yaml

from ..types import REGISTRY

#: 问题性质 a measure may name (the rule types' own natures, plus those a rule may set)
NATURES = ("超支付范围", "超支付标准", "重复收费", "不合理诊疗", "虚构服务", "不合理收费", "其他")

#: measure -> what it is (per institution over the assessed months; "final" = in a final deduction statement)
BASE_MEASURES = {
    "fund_pay": "基金支付金额（元）: setl_d.fund_pay_sumamt of settlements not refunded, by settlement month",
    "findings": "疑点数: post-hoc findings of the months (not superseded), whatever their state",
    "violations": "违规数: findings in final deduction statements (扣款单) of the months",
    "violation_amount": "违规金额（元）: flagged amount of those findings",
    "deductions": "扣款金额（元）: their deductions (each line once)",
    "per_10k_fund": "每万元基金支付违规金额: violation_amount / fund_pay x 10000 (none without fund payment)",
    "deduction_rate": "扣款率: deductions / fund_pay (none without fund payment)",
    "appeals_filed": "申诉数: appeals (复议 included) filed on the months' findings",
    "appeals_won": "申诉成立数: appeals a reviewer accepted (撤销扣款)",
    "appeal_win_rate": "申诉成立率: appeals_won / appeals_filed (none without appeals)",
    "tips_founded": "举报属实数: tips naming the institution, received in the months, found true (属实, 奖励已发放)",
}
MEASURES = dict(BASE_MEASURES)
for _n in NATURES:
    MEASURES[f"count.{_n}"] = f"{_n} 违规数: final findings of this nature"
    MEASURES[f"amount.{_n}"] = f"{_n} 扣款金额（元）: their deductions"

TOP_FIELDS = {"name", "version", "indicators", "grades", "veto", "veto_grade", "description"}
IND_FIELDS = {"id", "name", "measure", "weight", "full_at", "zero_at"}
GRADE_FIELDS = {"grade", "min_score"}
VETO_FIELDS = {"id", "name", "measure", "at_least", "above"}


class SchemeError(Exception):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class Indicator:
    id: str
    name: str
    measure: str
    weight: Decimal
    full_at: Decimal
    zero_at: Decimal


@dataclass(frozen=True)
class Veto:
    id: str
    name: str
    measure: str
    op: str  # ">=" (at_least) or ">" (above)
    value: Decimal


@dataclass(frozen=True)
class Scheme:
    name: str
    version: str
    indicators: tuple[Indicator, ...]
    grades: tuple[tuple[str, Decimal], ...]
    vetoes: tuple[Veto, ...]
    veto_grade: str
    source: str

    def canonical(self) -> dict:
        return {
            "name": self.name,
            "version": self.version,
            "indicators": [
                {
                    "id": i.id,
                    "name": i.name,
                    "measure": i.measure,
                    "weight": str(i.weight),
                    "full_at": str(i.full_at),
                    "zero_at": str(i.zero_at),
                }
                for i in self.indicators
            ],
            "grades": [{"grade": g, "min_score": str(m)} for g, m in self.grades],
            "veto": [
                {"id": v.id, "name": v.name, "measure": v.measure, "op": v.op, "value": str(v.value)}
                for v in self.vetoes
            ],
            "veto_grade": self.veto_grade,
        }

    def json(self) -> str:
        return json.dumps(self.canonical(), ensure_ascii=False, sort_keys=True, separators=(",", ":"))

    @property
    def hash(self) -> str:
        """SHA-256 of the canonical form: a comment or key order does not change it, a number does."""
        return hashlib.sha256(self.json().encode()).hexdigest()


DEFAULT_SCHEME = Path(__file__).with_name("default_scheme.yaml")


def _num(v, where: str, problems: list[str]) -> Decimal | None:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        problems.append(f"{where}: must be a number, got {v!r}")
        return None
    try:
        d = Decimal(str(v).strip())
    except InvalidOperation:
        problems.append(f"{where}: must be a number, got {v!r}")
        return None
    if not d.is_finite():
        problems.append(f"{where}: must be a finite number, got {v!r}")
        return None
    return d


def _text(v, where: str, problems: list[str]) -> str:
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str) or not v.strip():
        problems.append(f"{where}: must be a non-empty text, got {v!r}")
        return ""
    return v.strip()


def _measure(v, where: str, problems: list[str]) -> str:
    m = _text(v, where, problems)
    if m and m not in MEASURES:
        hint = ""
        if m.startswith(("count.", "amount.")):
            hint = f" (natures: {', '.join(NATURES)})"
        problems.append(
            f"{where}: unknown measure {m!r}; known: {', '.join(BASE_MEASURES)}, count.NATURE, amount.NATURE{hint}"
        )
    return m


def parse(raw, source: str) -> Scheme:
    """Check a scheme read from YAML; every problem at once, each with ``source: field: ...``."""
    p: list[str] = []

    def bad(msg):
        p.append(f"{source}: {msg}")

    if not isinstance(raw, dict):
        raise SchemeError([f"{source}: a scheme is a mapping with name, version, indicators, grades, veto"])
    for k in sorted(set(raw) - TOP_FIELDS, key=str):
        bad(f"unknown field {k!r} (known: {', '.join(sorted(TOP_FIELDS))})")
    name = _text(raw.get("name"), f"{source}: name", p)
    version = _text(raw.get("version"), f"{source}: version", p)
    inds, seen = [], set()
    ri = raw.get("indicators")
    if not isinstance(ri, list) or not ri:
        bad("indicators: must be a non-empty list")
        ri = []
    for j, x in enumerate(ri):
        w = f"{source}: indicators[{j}]"
        if not isinstance(x, dict):
            p.append(f"{w}: must be a mapping with {', '.join(sorted(IND_FIELDS))}")
            continue
        for k in sorted(set(x) - IND_FIELDS, key=str):
            p.append(f"{w}: unknown field {k!r} (known: {', '.join(sorted(IND_FIELDS))})")
        iid = _text(x.get("id"), f"{w}.id", p)
        if iid in seen:
            p.append(f"{w}.id: {iid!r} is used twice")
        seen.add(iid)
        wt = _num(x.get("weight"), f"{w}.weight", p)
        if wt is not None and wt <= 0:
            p.append(f"{w}.weight: must be above 0, got {x.get('weight')!r}")
        full, zero = _num(x.get("full_at"), f"{w}.full_at", p), _num(x.get("zero_at"), f"{w}.zero_at", p)
        if full is not None and zero is not None and full == zero:
            p.append(f"{w}: full_at and zero_at must differ (both {full})")
        inds.append(
            Indicator(
                iid,
                _text(x.get("name", iid), f"{w}.name", p),
                _measure(x.get("measure"), f"{w}.measure", p),
                wt or Decimal(0),
                full or Decimal(0),
                zero or Decimal(0),
            )
        )
    total = sum((i.weight for i in inds), Decimal(0))
    if inds and total != 100 and not any("weight" in m for m in p):
        bad(f"indicators: the weights must add up to 100, they add up to {total}")
    grades: list[tuple[str, Decimal]] = []
    rg = raw.get("grades")
    if not isinstance(rg, list) or not rg:
        bad("grades: must be a non-empty list of {grade, min_score}")
        rg = []
    for j, g in enumerate(rg):
        w = f"{source}: grades[{j}]"
        if not isinstance(g, dict):
            p.append(f"{w}: must be a mapping with grade and min_score")
            continue
        for k in sorted(set(g) - GRADE_FIELDS, key=str):
            p.append(f"{w}: unknown field {k!r} (known: grade, min_score)")
        gn, ms = _text(g.get("grade"), f"{w}.grade", p), _num(g.get("min_score"), f"{w}.min_score", p)
        if ms is not None and grades and ms >= grades[-1][1]:
            p.append(f"{w}.min_score: grades go from the highest down; {ms} is not below {grades[-1][1]}")
        if ms is not None:
            grades.append((gn, ms))
    if grades and grades[-1][1] > 0:
        p.append(
            f"{source}: grades[{len(rg) - 1}].min_score: the last grade must take every score (min_score 0), "
            f"got {grades[-1][1]}"
        )
    vetoes, vseen = [], set()
    rv = raw.get("veto") or []
    if not isinstance(rv, list):
        bad("veto: must be a list")
        rv = []
    for j, v in enumerate(rv):
        w = f"{source}: veto[{j}]"
        if not isinstance(v, dict):
            p.append(f"{w}: must be a mapping with id, name, measure and at_least or above")
            continue
        for k in sorted(set(v) - VETO_FIELDS, key=str):
            p.append(f"{w}: unknown field {k!r} (known: {', '.join(sorted(VETO_FIELDS))})")
        vid = _text(v.get("id"), f"{w}.id", p)
        if vid in vseen:
            p.append(f"{w}.id: {vid!r} is used twice")
        vseen.add(vid)
        has = [k for k in ("at_least", "above") if k in v]
        if len(has) != 1:
            p.append(f"{w}: give exactly one of at_least (value >= X) or above (value > X)")
            continue
        val = _num(v[has[0]], f"{w}.{has[0]}", p)
        vetoes.append(
            Veto(
                vid,
                _text(v.get("name", vid), f"{w}.name", p),
                _measure(v.get("measure"), f"{w}.measure", p),
                ">=" if has[0] == "at_least" else ">",
                val if val is not None else Decimal(0),
            )
        )
    veto_grade = _text(raw.get("veto_grade", grades[-1][0] if grades else "-"), f"{source}: veto_grade", p)
    if p:
        raise SchemeError(p)
    return Scheme(name, version, tuple(inds), tuple(grades), tuple(vetoes), veto_grade, source)


def load(path: str | Path | None = None) -> Scheme:
    path = Path(path) if path else DEFAULT_SCHEME
    if not path.is_file():
        raise SchemeError([f"{path}: no such scheme file"])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise SchemeError([f"{path}: not a readable YAML file: {str(e).splitlines()[0]}"]) from None
    return parse(raw, str(path))


def nature_table() -> list[tuple[str, str]]:
    """(rule type, its 问题性质) for every rule type: the mapping the assessment counts by (a rule
    may override it with ``nature:``; the finding keeps the nature of its rule)."""
    return sorted((name, t.nature) for name, t in REGISTRY.items())
