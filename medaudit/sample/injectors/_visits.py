"""Shared by the visit- and person-level injectors: new stays and clinic visits with plain lines.

The lines of a new visit keep every line-level rule of the sample library: one bed, nursing
and ward-round fee per day from admission to the day before discharge, an infusion with its
infusion set and one drug on the first day, everything inside the visit's times.
"""

from __future__ import annotations

import datetime as dt

from .. import catalog as cat
from ..inject import Context

#: an oral western drug that no inpatient is given (so a clinic visit never repeats a ward drug)
CLINIC_DRUG = "XM01AEB090E008010103174"  # 布洛芬缓释胶囊


def add_stay(
    ctx: Context, like: dict, begin: dt.datetime, days: int, inst: str | None = None, **changes
) -> tuple[dict, list[str]]:
    """A new inpatient stay of ``like``'s person from ``begin`` for ``days`` nights (discharge at
    10:00 on day ``days``). Returns the visit and the bkkp_sn of its lines."""
    end = dt.datetime.combine(begin.date() + dt.timedelta(days=days), dt.time(10, 0))
    v = ctx.add_visit(like, begin, end, inst=inst, **changes)
    if inst is not None:  # a doctor of the institution
        v["doctor"] = f"D{v['fixmedins_code'][-4:]}{v['dept']}1"
    sns = []
    for d in range(max(days, 1)):
        day = begin.date() + dt.timedelta(days=d)
        base = begin if d == 0 else dt.datetime.combine(day, dt.time(7, 0))
        for k, code in enumerate((cat.BED, cat.NURSE_2, cat.IPT_CONSULT)):
            sns.append(ctx.add_line(v, code, base + dt.timedelta(minutes=10 + 10 * k)))
    sns.append(ctx.add_line(v, cat.BLOOD_ROUTINE, begin + dt.timedelta(minutes=45)))
    sns.append(ctx.add_line(v, cat.INFUSION, begin + dt.timedelta(minutes=60)))
    sns.append(ctx.add_line(v, cat.INFUSION_SET, begin + dt.timedelta(minutes=61)))
    sns.append(ctx.add_line(v, "XB05XAL045B002010109234", begin + dt.timedelta(minutes=62)))  # 氯化钠注射液
    return v, sns


def add_clinic_visit(
    ctx: Context,
    like: dict,
    begin: dt.datetime,
    inst: str | None = None,
    consult: bool = True,
    drug: str = CLINIC_DRUG,
    cnt: int = 1,
    appr: str = "1",
) -> tuple[dict, list[str]]:
    """A new general outpatient visit (med_type 11) of ``like``'s person at ``begin`` (three hours):
    a consultation (optional) and one drug for 5 days (``appr`` "2": switched to self-pay).
    Returns the visit and its lines."""
    v = ctx.add_visit(like, begin, begin + dt.timedelta(hours=3), inst=inst, med_type="11", inpatient=False)
    v["dept"] = "A02" if v["level"] == 1 else "A03"
    v["doctor"] = f"D{v['fixmedins_code'][-4:]}{v['dept']}1"
    sns = []
    if consult:
        sns.append(ctx.add_line(v, cat.OPT_CONSULT, begin + dt.timedelta(minutes=5)))
    sns.append(ctx.add_line(v, drug, begin + dt.timedelta(minutes=20), cnt, prd_days=5, appr=appr))
    return v, sns


def other_institution(ctx: Context, inst: str) -> str:
    """A random institution other than ``inst``."""
    codes = [x[0] for x in cat.INSTITUTIONS if x[0] != inst]
    return codes[int(ctx.rng.integers(0, len(codes)))]


def add_short_stay(
    ctx: Context,
    like: dict,
    begin: dt.datetime,
    days: int,
    empty_days: tuple[int, ...] = (),
    treatment: bool = False,
    **changes,
) -> tuple[dict, list[str]]:
    """A new general inpatient stay (med_type 21) of ``like``'s person for ``days`` nights with
    only classes an outpatient visit could give (campaign detectors): each day a bed (01) and a
    ward round (02), and but on ``empty_days`` (offsets from admission) a nursing fee (07); on
    day 0 a blood routine (04) and an oral drug (09). ``treatment``: an infusion (05) on day 0
    too. Returns the visit and its lines."""
    end = dt.datetime.combine(begin.date() + dt.timedelta(days=days), dt.time(10, 0))
    changes.setdefault("med_type", "21")
    v = ctx.add_visit(like, begin, end, inpatient=True, **changes)
    sns = []
    for d in range(max(days, 1)):
        base = begin if d == 0 else dt.datetime.combine(begin.date() + dt.timedelta(days=d), dt.time(7, 0))
        codes = (cat.BED, cat.IPT_CONSULT) if d in empty_days else (cat.BED, cat.NURSE_2, cat.IPT_CONSULT)
        for k, code in enumerate(codes):
            sns.append(ctx.add_line(v, code, base + dt.timedelta(minutes=10 + 10 * k)))
    sns.append(ctx.add_line(v, cat.BLOOD_ROUTINE, begin + dt.timedelta(minutes=45)))
    sns.append(ctx.add_line(v, CLINIC_DRUG, begin + dt.timedelta(minutes=50), prd_days=3))
    if treatment:
        sns.append(ctx.add_line(v, cat.INFUSION, begin + dt.timedelta(minutes=60)))
    return v, sns
