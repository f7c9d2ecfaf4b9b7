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

from .base import Param, RuleType

from ..semantics import case, cat, col
from .line_check import ITEM, LINE, day, line_check

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


_group, _lo, _hi = col("group"), col("min_age"), col("max_age")
_ay, _ad = col("age_years"), col("age_days")

# One declaration, both executions: the query and the pre-alert evaluator are generated from it.
QUERY, evaluate = line_check(
    mode="whole_line",
    where=case(
        (_group.eq("新生儿"), _ad >= col("neonate_days")),
        (_group.eq("婴幼儿"), _ay >= col("infant_years")),
        (_group.eq("儿童"), _ay >= col("child_years")),
        default=(~_lo.is_null() & (_ay < _lo)) | (~_hi.is_null() & (_ay > _hi)),
    )
    & (col("deductible") > 0),
    ev_head=cat("患者出生日期 ", day(col("brdy"))),
    ev_line=cat(
        ITEM,
        " 限",
        case(
            (_group.eq("新生儿"), cat("新生儿（出生", col("neonate_days"), "天内）")),
            (_group.eq("婴幼儿"), cat("婴幼儿（", col("infant_years"), "岁以下）")),
            (_group.eq("儿童"), cat("儿童（", col("child_years"), "岁以下）")),
            default=case(
                (~_lo.is_null() & ~_hi.is_null(), cat(_lo, "至", _hi, "岁")),
                (~_lo.is_null(), cat(_lo, "岁及以上")),
                default=cat(_hi, "岁及以下"),
            ),
        ),
        "使用，收费时患者 ",
        case((_ay < 1, cat(_ad, " 天")), default=cat(_ay, " 岁")),
        "；",
        LINE,
    ),
)


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
    query=QUERY,
)
