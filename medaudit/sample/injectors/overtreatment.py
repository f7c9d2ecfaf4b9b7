"""过度检查 (R-OVT-001: classes 03 and 04, percentile 95, at least 30 peers): a peer group built
for the purpose, since the clean data's groups (month, kind, level, main diagnosis category)
are too small in a sample batch to be judged.

Thirty new outpatient visits of thirty new persons (copies of random visits with a new
``psn_no``: no other visit of theirs comes near), all on one day at one institution with the
main diagnosis R51 (头痛, never drawn by the clean data), each a consultation (02) and one lab
line (C反应蛋白测定, 04) of a quantity: 27 visits 1, 2 visits 3, 1 visit 9. The 95th percentile
is at position 29 x 0.95 = 27.55 of the sorted quantities: 3 + 0.55 x (3 - 3) = 3. The visit
with 9 is flagged (its lab line is violating); the two with 3 equal the percentile and are near
misses. A second group (R50 发热) of only 29 visits with the same outlier is not judged
(min_peers 30). One group of each per 5,000 visits, at least one.
"""

import datetime as dt

import numpy as np

from .. import catalog as cat
from ..inject import Context, Injector

CRP = "002503050060000"  # C反应蛋白测定 (04); no frequency or period rule names it


def _group(ctx: Context, day: dt.date, inst: str, diag: str, quantities: list[int], tag: str) -> list[tuple[dict, str, int]]:
    out = []
    picks = ctx.rng.integers(0, ctx.n_visits, len(quantities))
    for k, (q, i) in enumerate(zip(quantities, picks)):
        like = ctx.visits.row(int(i), named=True)
        begin = dt.datetime.combine(day, dt.time(8, 0)) + dt.timedelta(minutes=7 * k)
        v = ctx.add_visit(like, begin, begin + dt.timedelta(hours=2), inst=inst, psn_no=f"P39{tag}{k:03d}",
                          med_type="11", inpatient=False, main_diag=diag, second_diag=None, died=False)
        v["dept"] = "A02" if v["level"] == 1 else "A03"
        v["doctor"] = f"D{v['fixmedins_code'][-4:]}{v['dept']}1"
        ctx.add_line(v, cat.OPT_CONSULT, begin + dt.timedelta(minutes=5))
        out.append((v, ctx.add_line(v, CRP, begin + dt.timedelta(minutes=20), q), q))
    return out


def inject(ctx: Context) -> None:
    n = max(1, ctx.n_visits // 5000)
    days = np.sort(ctx.visits["begntime"].dt.date().to_numpy())
    for g in range(n):
        # a day inside the batch's range of visits, the same month for the whole group
        day = days[int(ctx.rng.integers(len(days) // 4, 3 * len(days) // 4))].astype("datetime64[D]").item()
        inst = cat.INSTITUTIONS[int(ctx.rng.integers(0, len(cat.INSTITUTIONS)))][0]
        quantities = [1] * 27 + [3, 3, 9]
        order = ctx.rng.permutation(len(quantities))
        for v, sn, q in _group(ctx, day, inst, "R51.x00", [quantities[i] for i in order], f"{g:04d}A"):
            if q == 9:
                ctx.expect("R-OVT-001", v, sn, "检查化验数量 9，同类 30 人次（同月门诊、同级、主诊断 R51）第 95 百分位 3")
        _group(ctx, day, inst, "R50.900", [1] * 28 + [9], f"{g:04d}B")


INJECTOR = Injector("overtreatment", inject, rate=0.0)
