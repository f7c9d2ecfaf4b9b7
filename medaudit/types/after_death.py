"""死亡后就医 after_death: fees dated after the person's death.

**What it flags.** A line whose fee date is after the person's death date, taken from the
civil-registration table `psn_death` or from any visit's `die_date` (the earliest known date
wins). Fees on the day of death are not flagged. Without items the rule looks at every line;
with items, only at those.

**Why it matters.** Nobody is treated after death: such lines are invented services or a dead
person's card in use (虚构服务, 冒名就医).

**Deduction.** `whole_line`.

**Example.**

```yaml
- id: R-DTH-001
  version: 1
  name: 死亡后发生费用
  type: after_death
  nature: 虚构服务
```

gives `参保人 2026-03-01 死亡；项目【血常规】(002503010010000) 2026-03-05 收费 1 次，金额 20.00 元`.
"""

#: the same documentation in Chinese (`medaudit rules explain` shows it first; keep the two in step)
DOC_ZH = """死亡后就医：收费日期晚于参保人死亡日期的明细。

**查什么。** 明细的收费日期晚于本人的死亡日期即命中；死亡日期取民政数据表 `psn_death` 或任一次就诊的 `die_date`，以已知最早的为准。死亡当天的收费不算。规则未列项目时检查所有明细，列了项目则只查这些项目。

**为什么。** 人死后不可能再接受诊疗：这类明细是虚构服务或冒用死者医保卡（冒名就医）。

**扣款。** `whole_line`：整条明细。
"""

from .base import RuleType

from ..semantics import cat, col
from .line_check import ITEM, LINE, Lookup, day, line_check

#: the person's death date (``deaths``: the earliest known per person; in a request, its context's)
DIE_DATE = Lookup("deaths", key="psn_no", value="die_date", py=lambda ctx: ctx.deaths)

# One declaration, both executions: the query and the pre-alert evaluator are generated from it.
QUERY, evaluate = line_check(
    mode="whole_line",
    where=(col("fee_date") > DIE_DATE) & (col("deductible") > 0),
    ev_head=cat("参保人 ", day(DIE_DATE), " 死亡"),
    ev_line=cat(ITEM, " ", LINE),
    lookups=(DIE_DATE,),
)


RULE_TYPE = RuleType(
    name="after_death",
    title="死亡后就医",
    nature="虚构服务",
    mode="whole_line",
    doc=__doc__,
    doc_zh=DOC_ZH,
    evaluate=evaluate,
    items="optional",
    query=QUERY,
)
