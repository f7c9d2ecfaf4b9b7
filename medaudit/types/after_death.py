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

from .base import ITEM_REF, LINE_FACT, RuleType


# ---------------------------------------------------------------------------- in memory (pre-alert)
# The same check over the request's rows, for the pre-alert fast path: a transcription of the
# query above (tests/test_prealert_parity.py holds the two equal).
from .evidence import Hit, ref, line_fact, hit


def evaluate(ctx, ms: list[dict]) -> list[Hit]:
    out = []
    for m in ms:
        d = ctx.deaths.get(m["psn_no"])
        if d is not None and m["fee_date"] > d and m["deductible"] > 0:
            out.append(hit(m, "violating", m["deductible"], f"参保人 {d:%Y-%m-%d} 死亡", f"{ref(m)} {line_fact(m)}"))
    return out


RULE_TYPE = RuleType(
    name="after_death",
    title="死亡后就医",
    nature="虚构服务",
    mode="whole_line",
    doc=__doc__,
    doc_zh=DOC_ZH,
    evaluate=evaluate,
    items="optional",
    query=f"""
        SELECT m.rule_key, m.mdtrt_id AS finding_key, m.mdtrt_id, m.bkkp_sn, 'violating' AS role,
               m.deductible AS claim,
               '参保人 ' || strftime(d.die_date, '%Y-%m-%d') || ' 死亡' AS ev_head,
               {ITEM_REF} || ' ' || {LINE_FACT} AS ev_line
        FROM {{m}} m JOIN {{deaths}} d ON d.psn_no = m.psn_no
        WHERE m.fee_date > d.die_date AND m.deductible > 0
    """,
)
