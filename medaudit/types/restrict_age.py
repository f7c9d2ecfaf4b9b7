"""限年龄 restrict_age: an item for an age group billed outside it.

**What it flags.** A matched line whose person's age on the fee date is outside the rule's
range. Age is in completed years (a person born 2020-03-02 is 5 on 2026-03-01 and 6 on
2026-03-02). The range is either `min_age` and/or `max_age` in years, both inclusive, or a
`group`:

| group | allowed | flagged |
|---|---|---|
| 新生儿 neonate | under `neonate_days` (28) days old | 28 days and older |
| 婴幼儿 infant | under `infant_years` (3) | 3 years and older |
| 儿童 child | under `child_years` (18) | 18 years and older |

**Why it matters.** Paediatric drugs and services (儿童龋齿预防保健) billed for adults, or
occupational training (职业功能训练) billed beyond working age, are outside the scope the fund
pays for. National batches 1 and 8-2.

**Deduction.** `whole_line`.

**Example.**

```yaml
- id: R-AGE-001
  version: 1
  name: 儿童项目限18岁以下
  type: restrict_age
  items: {codes: ["001302000010000"]}   # 儿童龋齿预防保健
  params: {group: 儿童}
```

gives `患者出生日期 1990-05-05；项目【儿童龋齿预防保健】(001302000010000) 限儿童（18岁以下）使用，收费时患者 35 岁；2026-03-02 收费 1 次，金额 25.00 元`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """限年龄：限定年龄段的项目用于该年龄段以外的人。

**查什么。** 匹配的明细，其参保人在收费日期的年龄超出规则范围。年龄按周岁计（2020-03-02 出生的人 2026-03-01 为 5 岁，2026-03-02 为 6 岁）。范围为 `min_age` 和/或 `max_age`（周岁，均含），或 `group`：

| group | 允许 | 命中 |
|---|---|---|
| 新生儿 neonate | 出生不满 `neonate_days`（28）天 | 28 天及以上 |
| 婴幼儿 infant | 不满 `infant_years`（3）岁 | 3 岁及以上 |
| 儿童 child | 不满 `child_years`（18）岁 | 18 岁及以上 |

**为什么。** 儿童用药和儿童服务（儿童龋齿预防保健）用于成人，或职业功能训练用于超过劳动年龄的人，不在基金支付范围内。见国家第 1 批和第 8-2 批规则。

**扣款。** `whole_line`：整条明细。
"""

from .base import ITEM_REF, LINE_FACT, Param, RuleType

GROUPS = ("新生儿", "婴幼儿", "儿童")


def _validate(params: dict) -> str | None:
    if params.get("group") is None and params.get("min_age") is None and params.get("max_age") is None:
        return "params needs group, or min_age and/or max_age"
    if params.get("group") is not None and (params.get("min_age") is not None or params.get("max_age") is not None):
        return "params: give either group or min_age/max_age, not both"
    lo, hi = params.get("min_age"), params.get("max_age")
    if lo is not None and hi is not None and hi < lo:
        return f"params.max_age {hi} is below min_age {lo}"
    return None


# ---------------------------------------------------------------------------- in memory (pre-alert)
# The same check over the request's rows, for the pre-alert fast path: a transcription of the
# query above (tests/test_prealert_parity.py holds the two equal).
from .evidence import Hit, ref, line_fact, hit


def evaluate(ctx, ms: list[dict]) -> list[Hit]:
    out = []
    for m in ms:
        g, ay, ad = m["group"], m["age_years"], m["age_days"]
        lo, hi = m["min_age"], m["max_age"]
        if ay is None:
            continue
        if g == "新生儿":
            outside = m["neonate_days"] is not None and ad >= m["neonate_days"]
            allowed = f"新生儿（出生{m['neonate_days']}天内）"
        elif g == "婴幼儿":
            outside = m["infant_years"] is not None and ay >= m["infant_years"]
            allowed = f"婴幼儿（{m['infant_years']}岁以下）"
        elif g == "儿童":
            outside = m["child_years"] is not None and ay >= m["child_years"]
            allowed = f"儿童（{m['child_years']}岁以下）"
        else:
            outside = (lo is not None and ay < lo) or (hi is not None and ay > hi)
            allowed = (
                f"{lo}至{hi}岁"
                if lo is not None and hi is not None
                else f"{lo}岁及以上"
                if lo is not None
                else f"{hi}岁及以下"
            )
        if outside and m["deductible"] > 0:
            age = f"{ad} 天" if ay < 1 else f"{ay} 岁"
            out.append(
                hit(
                    m,
                    "violating",
                    m["deductible"],
                    f"患者出生日期 {m['brdy']:%Y-%m-%d}",
                    f"{ref(m)} 限{allowed}使用，收费时患者 {age}；{line_fact(m)}",
                )
            )
    return out


RULE_TYPE = RuleType(
    name="restrict_age",
    title="限年龄",
    nature="超支付范围",
    mode="whole_line",
    doc=__doc__,
    doc_zh=DOC_ZH,
    evaluate=evaluate,
    params=(
        Param("group", "choice", "age group: 新生儿, 婴幼儿 or 儿童", choices=GROUPS, per_item=True),
        Param("min_age", "int", "youngest allowed age in completed years (inclusive)", per_item=True, minimum=0),
        Param("max_age", "int", "oldest allowed age in completed years (inclusive)", per_item=True, minimum=0),
        Param("neonate_days", "int", "新生儿: under this many days", default=28, minimum=1),
        Param("infant_years", "int", "婴幼儿: under this many years", default=3, minimum=1),
        Param("child_years", "int", "儿童: under this many years", default=18, minimum=1),
    ),
    validate=_validate,
    query=f"""
        WITH a AS (
            SELECT *,
                CASE "group"
                    WHEN '新生儿' THEN age_days >= neonate_days
                    WHEN '婴幼儿' THEN age_years >= infant_years
                    WHEN '儿童' THEN age_years >= child_years
                    ELSE (min_age IS NOT NULL AND age_years < min_age) OR (max_age IS NOT NULL AND age_years > max_age)
                END AS outside,
                CASE "group"
                    WHEN '新生儿' THEN '新生儿（出生' || neonate_days || '天内）'
                    WHEN '婴幼儿' THEN '婴幼儿（' || infant_years || '岁以下）'
                    WHEN '儿童' THEN '儿童（' || child_years || '岁以下）'
                    ELSE CASE WHEN min_age IS NOT NULL AND max_age IS NOT NULL THEN min_age || '至' || max_age || '岁'
                              WHEN min_age IS NOT NULL THEN min_age || '岁及以上'
                              ELSE max_age || '岁及以下' END
                END AS allowed_text
            FROM {{m}})
        SELECT rule_key, mdtrt_id AS finding_key, mdtrt_id, bkkp_sn, 'violating' AS role, deductible AS claim,
               '患者出生日期 ' || strftime(brdy, '%Y-%m-%d') AS ev_head,
               {ITEM_REF} || ' 限' || allowed_text || '使用，收费时患者 '
                   || CASE WHEN age_years < 1 THEN age_days || ' 天' ELSE age_years || ' 岁' END
                   || '；' || {LINE_FACT} AS ev_line
        FROM a WHERE outside AND deductible > 0
    """,
)
