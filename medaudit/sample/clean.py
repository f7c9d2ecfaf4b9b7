"""The clean part of a sample batch: realistic visits and fee lines that break no sample rule.

Everything is drawn with numpy from one seeded generator, block by block (all bed-day lines
at once, all day-0 labs at once, ...), so a million fee lines take seconds. The clean data
keeps, by construction, to every rule of the sample library in ``rules/`` and to the rules
the other types will need:

- one bed fee, one nursing fee and one ward-round fee per day of a stay, on the days from
  admission to the day before discharge (so bed days = length of stay), never on the
  discharge day; monitoring hours at most 24 a day;
- restricted items only where they are allowed (子宫造影 for women, 儿童龋齿预防保健 under 18,
  新生儿护理 for neonates, 参附注射液 at level 2 and above, 艾迪注射液 for cancer patients,
  疤痕止痒软化膏 for work-injury insurance, parenteral nutrition for inpatients);
- no main item of a duplicate-charge pair (急诊监护费 is billed instead of, never beside,
  急诊诊查费); every fee inside its visit; visits of one person at least 50 days apart (no
  readmission, no overlapping stays); diagnoses that fit the person's gender; every western
  drug of a visit from a different generic group; no two lines of one visit with the same
  code and time;
- every code billed is in the catalogue (``hilist``, in force all year) at exactly its price
  (price_cap, not_in_catalog), every line's amount exactly ``cnt`` x ``pric`` (amount_mismatch); days of supply at most 14 (outpatient prescriptions 3-14,
  discharge medication 14: supply_days_limit); no course-limited drug (丁苯酞) and no
  operation of a 主次手术 group (肝胆手术组) is billed; 糖化血红蛋白测定 at most once per stay
  (period_limit: visits of a person are 50 days apart); 一次性使用输液器 only beside 静脉输液
  (companion_required);
- visits of one person 50 days apart also mean: no readmission (so every department's
  readmission rate is exactly 0: peer_outlier on that rate flags nobody), no overlapping stay
  or clinic visit during a stay, at most one day a month on which a person buys a drug
  (high_frequency_purchase); 住院诊查费 only on stays (the sample sql rule); gender-specific
  diagnoses (N40, N70-N98) only for that gender (gender_diagnosis_conflict); ``purchases``
  cover every billed drug and consumable with stock to spare (inventory_mismatch).

About 15% of visits are "not plain": they hold a self-paid line (class C, switched to self-pay
or partly self-paid) or a refund (linked by ``init_feedetl_sn``, partial, or unlinked). A few
settlements are refunded, a few stays are still open (no discharge, no settlement), a few
patients die in hospital. Decoys check precision: lines that look like violations but are
refunded, self-paid or on a refunded settlement, so they must not be flagged.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from . import catalog as cat

EPOCH = np.datetime64("2026-01-01T00:00:00", "s")
DAY = np.timedelta64(86400, "s")
MIN = np.timedelta64(60, "s")

CODES = [i.code for i in cat.ITEMS]
CODE_IDX = {c: k for k, c in enumerate(CODES)}


def _ix(codes) -> np.ndarray:
    """Catalogue codes as indices into CODES (fee lines carry a small integer per line until the
    end, not a Python string: a 10M-line batch would otherwise hold gigabytes of objects)."""
    return np.array([CODE_IDX[c] for c in codes], dtype=np.int64)


#: CODE_RANK[i]: the place of CODES[i] in text order (lines are ordered by code as text)
CODE_RANK = np.argsort(np.argsort(np.array(CODES, dtype=object), kind="stable"), kind="stable").astype(np.int64)
assert len(CODES) < 64


@dataclass
class CleanData:
    visits: pl.DataFrame  # one row per visit, internal columns (see _visits)
    lines: pl.DataFrame  # internal line columns (see LINE_SCHEMA), sorted by vi, time
    diag: pl.DataFrame  # mdtrt_id, diag_code, maindiag_flag
    oprn: pl.DataFrame
    extra: dict[str, list[dict]] = field(default_factory=dict)
    next_sn: int = 0
    #: ids of this data start after these numbers (a part of a batch made in parts, see
    #: generate.Part): mdtrt_id MD2026{visit_base + 1 ...}, psn_no P33{person_base + 1 ...}
    visit_base: int = 0
    person_base: int = 0
    persons: int = 0  # psn_no numbers used: person_base + 1 .. person_base + persons
    part: int = 0  # the part's index (0: the first part, or the whole batch)


#: internal fee-line columns (money in fen; pric null = the catalogue price at the visit's level)
LINE_SCHEMA: dict[str, pl.DataType | type[pl.DataType]] = {
    "vi": pl.Int64,
    "bkkp_sn": pl.Utf8,
    "code": pl.Utf8,
    "cnt": pl.Int64,
    "time": pl.Datetime("us"),
    "pric": pl.Int64,
    "ownpay_pct": pl.Int64,  # fully self-paid share of the line, percent (class C: 100)
    "appr": pl.Utf8,  # hosp_appr_flag
    "dscg": pl.Utf8,  # dscg_tkdrug_flag
    "prd_days": pl.Int64,
    "init": pl.Utf8,  # init_feedetl_sn
    "billed": pl.Int64,  # det_item_fee_sumamt in fen when it is not cnt x pric (None: cnt x pric)
}


def sn(n: int) -> str:
    return f"F{n:010d}"


#: fee lines are ordered by visit, time and bkkp_sn; every bkkp_sn is sn(n), "F" and ten
#: digits, so its number orders them as the text does (and an integer sorts faster)
SN_ORDER = pl.col("bkkp_sn").str.slice(1).cast(pl.Int64)


#: a fee line's month as one integer, 202603 (a text per line, strftime, costs more)
MONTH = pl.col("time").dt.year() * 100 + pl.col("time").dt.month()


def month_text(col: str) -> pl.Expr:
    """202603 -> '2026-03'."""
    return pl.format("{}-{}", (pl.col(col) // 100).cast(pl.Utf8), (pl.col(col) % 100).cast(pl.Utf8).str.zfill(2))


def merge_lines(base: pl.DataFrame, extra: pl.DataFrame) -> pl.DataFrame:
    """The rows of ``base`` (already in fee-line order: visit, time, bkkp_sn) and ``extra`` (a
    few, any order) in fee-line order, like ``concat([base, extra]).sort(...)`` but without
    sorting ``base`` again: each extra row's place is found by binary search on one integer key
    (visit and time in seconds), ties broken by bkkp_sn, and the rows are gathered once. Falls
    back to the sort when a time has a fraction of a second or the key would not fit."""
    if extra.height == 0:
        return base
    both = pl.concat([base, extra], how="vertical")
    vb, ve = base["vi"].to_numpy(), extra["vi"].to_numpy()
    tb = base["time"].dt.epoch("us").to_numpy()
    te = extra["time"].dt.epoch("us").to_numpy()
    t0 = min(int(tb.min()), int(te.min())) if base.height else int(te.min())
    t1 = max(int(tb.max()), int(te.max())) if base.height else int(te.max())
    fits = (t1 - t0) // 1_000_000 < (1 << 32) and max(int(vb.max()) if base.height else 0, int(ve.max())) < (1 << 31)
    if not fits or (tb % 1_000_000).any() or (te % 1_000_000).any() or ve.min() < 0:
        return both.sort("vi", "time", SN_ORDER)
    kb = (vb << 32) | ((tb - t0) // 1_000_000)
    ke = (ve << 32) | ((te - t0) // 1_000_000)
    se = extra.select(SN_ORDER).to_series().to_numpy()
    order = np.lexsort((se, ke))
    ke, se = ke[order], se[order]
    lo = np.searchsorted(kb, ke, "left")
    hi = np.searchsorted(kb, ke, "right")
    ties = np.flatnonzero(hi > lo)
    if len(ties):  # same visit and second as base rows: after those with a lower bkkp_sn
        sb = base["bkkp_sn"]
        for i in ties.tolist():
            nums = sb.slice(int(lo[i]), int(hi[i] - lo[i])).str.slice(1).cast(pl.Int64).to_numpy()
            lo[i] += int(np.searchsorted(nums, se[i]))
    n, m = base.height, extra.height
    dest = lo + np.arange(m)  # extra row i (in order) lands after lo[i] base rows and i extra rows
    idx = np.empty(n + m, dtype=np.int64)
    rest = np.ones(n + m, dtype=bool)
    rest[dest] = False
    idx[dest] = n + order
    idx[rest] = np.arange(n)
    return both[idx]


def _expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For groups of the given sizes: (group index per element, position within its group)."""
    counts = np.asarray(counts, dtype=np.int64)
    idx = np.repeat(np.arange(len(counts)), counts)
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return idx, np.arange(len(idx)) - starts


def _pick(rng, options, p, n):
    return np.asarray(options, dtype=object)[rng.choice(len(options), size=n, p=p)]


def generate_clean(
    n_visits: int, seed: int, visit_base: int = 0, person_base: int = 0, line_base: int = 0, part: int = 0
) -> CleanData:
    """``n_visits`` clean visits and their lines. The bases shift the ids (mdtrt_id, setl_id,
    psn_no, bkkp_sn) past those of the parts of a batch made before this one (all 0: a batch in
    one piece); nothing else depends on them."""
    rng = np.random.default_rng(seed)
    n_visits = max(int(n_visits), 1)

    # ---------------------------------------------------------------- persons
    k = rng.choice([1, 2, 3], size=n_visits, p=[0.5, 0.3, 0.2])
    cum = np.cumsum(k)
    n_p = int(np.searchsorted(cum, n_visits) + 1)
    k = k[:n_p].copy()
    k[-1] -= int(cum[n_p - 1] - n_visits)
    cls = rng.choice(5, size=n_p, p=[0.02, 0.05, 0.11, 0.5, 0.32])  # neonate infant child adult elderly
    cls[(cls == 0) & (k > 1)] = 1
    t0 = rng.integers(0, 121, size=n_p)  # first visit day offset in 2026
    lo = np.array([0, 40, 3 * 365 + 30, 18 * 365 + 10, 60 * 365 + 10])[cls]
    hi = np.array([9, 2 * 365 + 100, 17 * 365 - 200, 59 * 365 - 300, 92 * 365])[cls]
    age0 = (lo + rng.random(n_p) * (hi - lo)).astype(np.int64)  # age in days at t0
    brdy_day = t0 - age0  # days from 2026-01-01
    gend = rng.choice(np.array(["1", "2", "0", "9"], dtype=object), size=n_p, p=[0.485, 0.485, 0.015, 0.015])
    ins = rng.choice(np.array(["310", "390", "410", "340"], dtype=object), size=n_p, p=[0.55, 0.40, 0.03, 0.02])
    ins[cls <= 2] = "390"
    names = np.array(list(cat.SURNAMES), dtype=object)[rng.integers(0, len(cat.SURNAMES), n_p)]

    # ---------------------------------------------------------------- visits
    pi, j = _expand(k)  # person of each visit, visit number of the person
    n = len(pi)
    last = j == k[pi] - 1
    start_day = t0[pi] + j * 60 + rng.integers(0, 11, size=n)
    vcls = cls[pi]
    vg = gend[pi]
    vins = ins[pi]
    inp = np.where(vcls == 0, True, rng.random(n) < np.where(vcls == 4, 0.42, 0.28))
    mt = np.where(
        inp,
        _pick(rng, ["21", "22", "24", "28"], [0.75, 0.1, 0.1, 0.05], n),
        _pick(rng, ["11", "13", "14"], [0.75, 0.15, 0.1], n),
    )
    mt[(vcls == 0)] = "21"
    mt[(vcls <= 2) & (mt == "14")] = "11"
    mt[(vcls <= 2) & (mt == "28")] = "21"
    # work injury: injuries, outpatient or trauma inpatient
    wi = vins == "410"
    mt[wi & inp] = "22"
    # institutions: neonates and day surgery at level 2 or 3
    inst = rng.choice(len(cat.INSTITUTIONS), size=n, p=cat.INST_WEIGHTS)
    need23 = (vcls == 0) | (mt == "28")
    inst[need23] = rng.integers(0, 5, size=int(need23.sum()))
    hosp_lv = np.array([x[2] for x in cat.INSTITUTIONS], dtype=object)[inst]
    level = np.array([{"01": 3, "03": 3, "05": 2, "06": 2, "13": 2}.get(x[2], 1) for x in cat.INSTITUTIONS])[inst]

    # diagnoses
    main = np.empty(n, dtype=object)
    u = rng.random(n)

    def assign(mask, options, p=None):
        m = int(mask.sum())
        if m:
            main[mask] = _pick(rng, options, p, m)

    age_v = start_day - brdy_day[pi]  # age in days at the visit start
    assign(vcls == 0, ["P59.900"])
    opt = ~inp
    assign((vcls == 1) & opt, ["Z00.100", "J06.900", "K52.900"], [0.4, 0.4, 0.2])
    assign((vcls == 1) & inp, ["J18.900", "K52.900"], [0.7, 0.3])
    assign((vcls == 2) & opt, ["J06.900", "K02.900", "K52.900", "J18.900"], [0.45, 0.25, 0.15, 0.15])
    assign((vcls == 2) & inp, ["J18.900", "K52.900", "S82.200"], [0.6, 0.2, 0.2])
    adult = vcls >= 3
    assign(adult & inp & (mt == "22"), ["S82.200"])
    assign(adult & inp & (mt == "28"), ["H25.900"])
    assign(
        adult & inp & np.isin(mt, ["21", "24"]),
        ["J18.900", "I63.900", "I25.103", "C34.900", "E11.900", "K29.700"],
        [0.3, 0.2, 0.15, 0.12, 0.11, 0.12],
    )
    assign(adult & opt, ["J06.900", "I10.x00", "E11.900", "K29.700", "M54.500"], [0.3, 0.25, 0.15, 0.15, 0.15])
    main[adult & opt & (vg == "2") & (u < 0.12)] = "N92.000"
    main[adult & opt & (vg == "2") & (u >= 0.12) & (u < 0.18)] = "N76.000"
    main[(vcls == 4) & (vg == "1") & (u < 0.1)] = "N40.x00"
    main[wi] = "S61.900"
    none = np.array(None, dtype=object)  # no second diagnosis (numpy's stubs take an array, not None)
    second = np.where(adult & inp & (rng.random(n) < 0.4), np.where(rng.random(n) < 0.5, "I10.x00", "E11.900"), none)
    second[second == main] = None
    dept = np.array([cat.DIAG[c][1] for c in main], dtype=object)
    dept[(vcls <= 2) & (dept != "A12")] = "A07"
    dept[(mt == "13")] = "A20"
    dept[(level == 1) & ~inp] = "A02"
    doctor = np.array(
        [f"D{cat.INSTITUTIONS[i][0][-4:]}{d}{x}" for i, d, x in zip(inst, dept, rng.integers(1, 5, n))], dtype=object
    )

    # times
    los_dd = np.zeros(n, dtype=np.int64)  # date(endtime) - date(begntime)
    long_stay = inp & (mt != "28")
    g = np.clip(np.round(rng.gamma(2.2, 3.0, n)), 1, 20).astype(np.int64)
    los_dd[long_stay] = g[long_stay]
    los_dd[vcls == 0] = np.minimum(los_dd[vcls == 0], 10)
    bh = np.where(inp & (mt != "28"), rng.integers(8, 20, n), rng.integers(8, 11, n))
    begin = EPOCH + start_day * DAY + bh * 3600 * np.timedelta64(1, "s") + rng.integers(0, 60, n) * MIN
    end = np.where(
        long_stay,
        EPOCH + (start_day + los_dd) * DAY + rng.integers(9 * 60, 11 * 60, n) * MIN,
        begin + np.where(mt == "28", rng.integers(360, 480, n), rng.integers(200, 260, n)) * MIN,
    )
    bed_days = np.where(inp, np.maximum(los_dd, 1), 0)

    # states: open stays, deaths in hospital, refunded settlements
    open_ = long_stay & last & (rng.random(n) < 0.01) & (los_dd >= 2)
    death = long_stay & last & ~open_ & (vcls == 4) & (rng.random(n) < 0.01)
    refd = ~inp & (rng.random(n) < 0.005)
    settled = ~open_
    ipt_days = np.where(long_stay & ~open_ & (rng.random(n) < 0.8), bed_days, -1)
    ipt_days = np.where(mt == "28", np.where(rng.random(n) < 0.5, 1, -1), ipt_days)

    vid = np.array([f"MD{2026}{x:08d}" for x in range(visit_base + 1, visit_base + n + 1)], dtype=object)
    psn = np.array([f"P33{x:09d}" for x in range(person_base + 1, person_base + n_p + 1)], dtype=object)

    # ---------------------------------------------------------------- fee lines (blocks)
    blocks: list[dict[str, np.ndarray]] = []

    def add(v, day, code, cnt, off, dscg=False, prd_days=-1):
        """A block of lines; ``code`` a catalogue code or an array of indices into CODES."""
        v = np.asarray(v, dtype=np.int64)
        m = len(v)
        if not m:
            return
        if isinstance(code, str):
            code = CODE_IDX[code]
        full = lambda x, t: np.broadcast_to(np.asarray(x, dtype=t), (m,))  # noqa: E731
        blocks.append(
            {
                "vi": v,
                "day": full(day, np.int64),
                "code": full(code, np.int64),
                "cnt": full(cnt, np.int64),
                "off": full(off, np.int64),
                "dscg": full(dscg, bool),
                "prd_days": full(prd_days, np.int64),
            }
        )

    iv = np.flatnonzero(inp)
    # daily: bed, nursing, ward round (days 0 .. bed_days-1)
    di, dd = _expand(bed_days[iv])
    dv = iv[di]
    add(dv, dd, cat.BED, 1, 10)
    nurse = np.where(
        vcls[dv] == 0,
        CODE_IDX[cat.NURSE_NEONATE],
        np.where(np.isin(main[dv], ["C34.900", "I63.900"]), CODE_IDX[cat.NURSE_1], CODE_IDX[cat.NURSE_2]),
    )
    add(dv, dd, nurse, 1, 20)
    add(dv, dd, cat.IPT_CONSULT, 1, 30)
    # infusion and infusion set on the first days
    inf_days = np.where(mt[iv] == "28", 1, np.minimum(bed_days[iv], 5))
    di, dd = _expand(inf_days)
    add(iv[di], dd, cat.INFUSION, 1, 170)
    add(iv[di], dd, cat.INFUSION_SET, 1, 175)
    # ECG monitoring on 30% of stays, up to 3 days, 12-22 hours a day
    ev = iv[(rng.random(len(iv)) < 0.3) & (mt[iv] != "28")]
    di, dd = _expand(np.minimum(bed_days[ev], 3))
    add(ev[di], dd, cat.ECG_MONITOR, rng.integers(12, 23, len(di)), 40)
    # drugs: 2-4 injectables of different generic groups, each for 3..bed_days days
    nd = rng.integers(2, 5, len(iv))
    order = rng.random((len(iv), len(cat.IPT_DRUGS))).argsort(axis=1)
    for s in range(4):
        has = nd > s
        vv = iv[has]
        dur = np.maximum(1, np.minimum(bed_days[vv], rng.integers(3, 15, len(vv))))
        di, dd = _expand(dur)
        codes = _ix(cat.IPT_DRUGS)[order[has, s]][di]
        add(vv[di], dd, codes, rng.integers(1, 3, len(di)), 100 + 10 * s)
    # day-0 labs and exams
    add(iv, 0, cat.BLOOD_ROUTINE, 1, 60)
    for q, code in enumerate(cat.LABS[1:5]):
        add(iv[rng.random(len(iv)) < 0.6], 0, code, 1, 62 + q)
    again = iv[bed_days[iv] >= 5]
    add(again, 3, cat.BLOOD_ROUTINE, 1, 60)
    diab = iv[(main[iv] == "E11.900") | (second[iv] == "E11.900")]
    add(diab, 0, cat.HBA1C, 1, 70)
    add(iv[np.isin(main[iv], ["J18.900", "C34.900"]) & (vcls[iv] > 0)], 0, "002101010010000", 1, 75)
    add(iv[vcls[iv] >= 4], 0, "002202000010000", 1, 77)
    # restricted drugs where they are allowed
    pv = iv[(bed_days[iv] >= 3) & (rng.random(len(iv)) < 0.08) & (vcls[iv] >= 3)]
    di, dd = _expand(np.minimum(bed_days[pv], 5) - 1)
    add(pv[di], dd + 1, cat.PARENTERAL, 1, 150)
    sv = iv[(level[iv] >= 2) & (rng.random(len(iv)) < 0.08) & (mt[iv] != "28") & (vcls[iv] >= 3)]
    di, dd = _expand(np.minimum(bed_days[sv], 7))
    add(sv[di], dd, cat.SHENFU, 1, 155)
    av = iv[(main[iv] == "C34.900") & (level[iv] >= 2)]
    di, dd = _expand(np.minimum(bed_days[av], 10))
    add(av[di], dd, cat.AIDI, 2, 160)
    add(iv[wi[iv]], 1, cat.SCAR_CREAM, 1, 165)
    # day surgery
    ds = iv[mt[iv] == "28"]
    add(ds, 0, cat.CATARACT, 1, 120)
    add(ds, 0, cat.GAUZE, 2, 125)
    # discharge medication (day = discharge day, anchored on the discharge time)
    dm = iv[long_stay[iv] & ~open_[iv] & (rng.random(len(iv)) < 0.3) & (vcls[iv] >= 3)]
    add(dm, -1, _ix(cat.ORAL_DRUGS)[rng.integers(0, len(cat.ORAL_DRUGS), len(dm))], 2, 0, dscg=True, prd_days=14)

    ov = np.flatnonzero(~inp)
    cons = np.where(
        mt[ov] == "13",
        np.where(rng.random(len(ov)) < 0.85, CODE_IDX[cat.ER_CONSULT], CODE_IDX[cat.ER_MONITOR]),
        CODE_IDX[cat.OPT_CONSULT],
    )
    add(ov, 0, cons, 1, 5)
    nl = rng.integers(0, 4, len(ov))
    lorder = rng.random((len(ov), len(cat.LABS))).argsort(axis=1)
    for s in range(3):
        has = nl > s
        add(ov[has], 0, _ix(cat.LABS)[lorder[has, s]], 1, 20 + 5 * s)
    ndr = rng.integers(1, 4, len(ov))
    dorder = rng.random((len(ov), len(cat.ORAL_DRUGS))).argsort(axis=1)
    for s in range(3):
        has = ndr > s
        m = int(has.sum())
        add(
            ov[has],
            0,
            _ix(cat.ORAL_DRUGS)[dorder[has, s]],
            rng.integers(1, 4, m),
            60 + 5 * s,
            prd_days=rng.integers(3, 15, m),
        )
    # restricted items where they are allowed
    ages_y = age_v // 365  # conservative: completed years never exceed days // 365
    add(ov[(main[ov] == "N92.000") & (rng.random(len(ov)) < 0.5)], 0, cat.HYSTEROGRAPHY, 1, 40)
    add(
        ov[(vg[ov] == "1") & (vcls[ov] == 3) & (mt[ov] == "11") & (rng.random(len(ov)) < 0.03)],
        0,
        cat.SEMEN_ROUTINE,
        1,
        42,
    )
    add(ov[(main[ov] == "K02.900") & (age_v[ov] < 17 * 365)], 0, cat.CHILD_DENTAL, 1, 44)
    add(ov[(main[ov] == "Z00.100") & (age_v[ov] < 2 * 365 + 300)], 0, cat.INFANT_CHECKUP, 1, 46)
    add(
        ov[(main[ov] == "J06.900") & (age_v[ov] < 14 * 365) & (rng.random(len(ov)) < 0.3)],
        0,
        cat.CHILD_SYRUP,
        1,
        80,
        prd_days=5,
    )
    add(
        ov[(main[ov] == "M54.500") & (ages_y[ov] >= 17) & (age_v[ov] < 59 * 365) & (rng.random(len(ov)) < 0.5)],
        0,
        cat.WORK_TRAINING,
        1,
        48,
    )
    add(ov[wi[ov]], 0, cat.SCAR_CREAM, 1, 85)

    cols = {}
    for key in ("vi", "day", "code", "cnt", "off", "dscg", "prd_days"):
        cols[key] = np.concatenate([b.pop(key) for b in blocks])
    del blocks
    keep = cols["cnt"] > 0
    if not keep.all():
        cols = {key: val[keep] for key, val in cols.items()}
    vi_ = cols["vi"]
    day = cols["day"]
    anchor = np.where(
        day == 0,
        begin[vi_],
        np.where(
            day < 0, end[vi_] - 60 * MIN, EPOCH + (start_day[vi_] + day) * DAY + 7 * 3600 * np.timedelta64(1, "s")
        ),
    )
    time = anchor + cols["off"] * MIN + rng.integers(0, 60, len(vi_)) * np.timedelta64(1, "s")
    del anchor
    # order by (visit, time, code) with one integer key (a three-column sort with a text column
    # is most of the clean data's time at 10M lines)
    secs = (time - EPOCH).astype(np.int64)
    if len(vi_) and vi_.max() < (1 << 31) and secs.min() >= 0 and secs.max() < (1 << 25):
        order = np.argsort((vi_ << 31) | (secs << 6) | CODE_RANK[cols["code"]], kind="stable")
    else:
        order = np.lexsort((CODE_RANK[cols["code"]], secs, vi_))
    del secs
    lines = pl.DataFrame(
        {
            "vi": vi_[order],
            "code": pl.Series(CODES, dtype=pl.Utf8).gather(cols["code"][order]),
            "cnt": cols["cnt"][order],
            "time": time[order].astype("datetime64[us]"),
            "dscg": cols["dscg"][order],
            "prd_days": cols["prd_days"][order],
        },
    ).with_columns(
        pl.when(pl.col("dscg")).then(pl.lit("1")).otherwise(None).alias("dscg"),
        pl.when(pl.col("prd_days") < 0).then(None).otherwise(pl.col("prd_days")).alias("prd_days"),
    )
    del cols, time, vi_, day, keep, order
    lines = lines.with_columns(
        pl.format("F{}", (pl.int_range(1, pl.len() + 1) + line_base).cast(pl.Utf8).str.zfill(10)).alias("bkkp_sn"),
        pl.lit(None, pl.Int64).alias("pric"),
        pl.lit(0, pl.Int64).alias("ownpay_pct"),
        pl.lit("1").alias("appr"),
        pl.lit(None, pl.Utf8).alias("init"),
        pl.lit(None, pl.Int64).alias("billed"),
    )
    # class C items are fully self-paid
    lines = lines.with_columns(
        pl.when(pl.col("code").is_in([i.code for i in cat.ITEMS if i.lv == "03"]))
        .then(100)
        .otherwise(0)
        .cast(pl.Int64)
        .alias("ownpay_pct")
    )
    next_sn = line_base + lines.height + 1

    visits = pl.DataFrame(
        {
            "vi": np.arange(n),
            "mdtrt_id": vid.astype(str),
            "psn_no": psn[pi].astype(str),
            "psn_name": (names[pi] + "某").astype(str),
            "gend": vg.astype(str),
            "brdy": (np.datetime64("2026-01-01") + brdy_day[pi].astype("timedelta64[D]")),
            "age_days": age_v,
            "insutype": vins.astype(str),
            "fixmedins_code": np.array([x[0] for x in cat.INSTITUTIONS])[inst],
            "fixmedins_name": np.array([x[1] for x in cat.INSTITUTIONS])[inst],
            "hosp_lv": hosp_lv.astype(str),
            "level": level,
            "med_type": mt.astype(str),
            "inpatient": inp,
            "begntime": begin.astype("datetime64[us]"),
            "endtime": end.astype("datetime64[us]"),
            "los_dd": los_dd,
            "bed_days": bed_days,
            "ipt_days": ipt_days,
            "main_diag": main.astype(str),
            "second_diag": second.tolist(),
            "dept": dept.astype(str),
            "doctor": doctor.astype(str),
            "settled": settled,
            "refunded": refd,
            "open": open_,
            "died": death,
            "last_of_person": last,
            "person_visits": k[pi],
        },
        schema_overrides={"second_diag": pl.Utf8},
    ).with_columns(
        pl.when(pl.col("open")).then(None).otherwise(pl.col("endtime")).alias("endtime"),
        pl.when(pl.col("ipt_days") < 0).then(None).otherwise(pl.col("ipt_days")).alias("ipt_days"),
        pl.format("S{}", pl.col("mdtrt_id").str.slice(2)).alias("setl_id"),
        pl.lit(True).alias("plain"),
    )

    diag = pl.concat(
        [
            visits.select("mdtrt_id", pl.col("main_diag").alias("diag_code"), pl.lit("1").alias("maindiag_flag")),
            visits.filter(pl.col("second_diag").is_not_null()).select(
                "mdtrt_id", pl.col("second_diag").alias("diag_code"), pl.lit("0").alias("maindiag_flag")
            ),
        ]
    )
    oprn = visits.filter(pl.col("med_type") == "28").select(
        "mdtrt_id",
        pl.lit("13.4100x001").alias("oprn_oprt_code"),
        pl.lit("白内障超声乳化抽吸术").alias("oprn_oprt_name"),
        (pl.col("begntime") + pl.duration(minutes=120)).alias("oprn_oprt_date"),
        pl.lit("1").alias("main_oprn_flag"),
    )
    data = CleanData(
        visits,
        lines.select([pl.col(c).cast(t) for c, t in LINE_SCHEMA.items()]),
        diag,
        oprn,
        {"psn_death": []},
        next_sn,
        visit_base=visit_base,
        person_base=person_base,
        persons=n_p,
        part=part,
    )
    _not_plain(data, rng)
    return data


def _not_plain(data: CleanData, rng: np.random.Generator) -> None:
    """Self-paid lines, refunds, decoys; marks the visits touched as not plain."""
    v = data.visits
    lines = data.lines
    n = v.height
    # visits that are not plain anyway
    not_plain = (v["refunded"] | v["open"]).to_numpy().copy()
    feature = np.where(rng.random(n) < 0.15, rng.integers(0, 6, n), -1)
    feature[not_plain] = -1
    drugs = [i.code for i in cat.ITEMS if i.list_type == "101"]
    first_drug = (
        lines.filter(pl.col("code").is_in(drugs))
        .group_by("vi")
        .agg(pl.col("bkkp_sn").first(), pl.col("code").first(), pl.col("cnt").first(), pl.col("time").first())
    )
    first_lab = (
        lines.filter(pl.col("code").is_in(cat.LABS))
        .group_by("vi")
        .agg(pl.col("bkkp_sn").first(), pl.col("code").first(), pl.col("time").first())
    )
    fd = first_drug.join(pl.DataFrame({"vi": np.arange(n), "f": feature}), on="vi")
    fl = first_lab.join(pl.DataFrame({"vi": np.arange(n), "f": feature}), on="vi")
    new_rows: list[pl.DataFrame] = []
    edits_appr = fd.filter(pl.col("f") == 1)["bkkp_sn"]
    edits_own = fd.filter(pl.col("f") == 2)["bkkp_sn"]
    sn0 = data.next_sn
    # (0) a class C herbal line
    herb = v.filter(pl.Series(feature == 0)).select("vi", "begntime")
    new_rows.append(
        herb.select(
            "vi",
            pl.lit(cat.HERB_C).alias("code"),
            pl.lit(1, pl.Int64).alias("cnt"),
            (pl.col("begntime") + pl.duration(minutes=181)).alias("time"),
            pl.lit(100, pl.Int64).alias("ownpay_pct"),
        )
    )
    # (3) full linked refund, (4) partial linked refund of a drug line
    full = fd.filter(pl.col("f") == 3)
    new_rows.append(
        full.select(
            "vi",
            "code",
            (-pl.col("cnt")).alias("cnt"),
            (pl.col("time") + pl.duration(minutes=20)).alias("time"),
            pl.col("bkkp_sn").alias("init"),
        )
    )
    part = fd.filter((pl.col("f") == 4) & (pl.col("cnt") >= 2))
    new_rows.append(
        part.select(
            "vi",
            "code",
            pl.lit(-1, pl.Int64).alias("cnt"),
            (pl.col("time") + pl.duration(minutes=20)).alias("time"),
            pl.col("bkkp_sn").alias("init"),
        )
    )
    # (5) unlinked refund of a lab line (same visit, code and day)
    unl = fl.filter(pl.col("f") == 5)
    new_rows.append(
        unl.select(
            "vi", "code", pl.lit(-1, pl.Int64).alias("cnt"), (pl.col("time") + pl.duration(minutes=15)).alias("time")
        )
    )
    touched = (
        set(herb["vi"])
        | set(fd.filter(pl.col("f").is_in([1, 2]))["vi"])
        | set(full["vi"])
        | set(part["vi"])
        | set(unl["vi"])
    )

    # decoys: look like violations but are refunded, self-paid or on a refunded settlement
    males = v.filter(
        (pl.col("gend") == "1")
        & ~pl.col("inpatient")
        & pl.col("settled")
        & (pl.col("age_days") > 20 * 365)
        & ~pl.col("vi").is_in(list(touched))
    )
    beds = v.filter(
        pl.col("inpatient")
        & pl.col("settled")
        & (pl.col("los_dd") >= 3)
        & ~pl.col("refunded")
        & ~pl.col("vi").is_in(list(touched))
    )
    decoy_appr: list[str] = []
    refund_setl: list[int] = []
    if n >= 100 and males.height >= 3 and beds.height >= 1:
        pick = males.sample(3, seed=int(rng.integers(1 << 31)))
        rows = pick.select(
            "vi",
            pl.lit(cat.HYSTEROGRAPHY).alias("code"),
            pl.lit(1, pl.Int64).alias("cnt"),
            (pl.col("begntime") + pl.duration(minutes=41)).alias("time"),
        )
        k = sn0 + sum(r.height for r in new_rows)
        rows = rows.with_columns(pl.Series("bkkp_sn", [sn(k), sn(k + 1), sn(k + 2)]))
        new_rows.append(rows)
        # decoy 1: fully refunded; decoy 2: switched to self-pay; decoy 3: its settlement refunded
        new_rows.append(
            rows.head(1).select(
                "vi",
                "code",
                pl.lit(-1, pl.Int64).alias("cnt"),
                (pl.col("time") + pl.duration(minutes=5)).alias("time"),
                pl.col("bkkp_sn").alias("init"),
            )
        )
        decoy_appr.append(sn(k + 1))
        refund_setl.append(int(pick["vi"][2]))
        # decoy 4: a second bed fee on day 1, fully refunded
        b = beds.sample(1, seed=int(rng.integers(1 << 31)))
        bvi = int(b["vi"][0])
        t = lines.filter((pl.col("vi") == bvi) & (pl.col("code") == cat.BED)).sort("time")["time"][1]
        bed_sn = sn(k + 3)
        new_rows.append(
            pl.DataFrame(
                {
                    "vi": [bvi],
                    "code": [cat.BED],
                    "cnt": [1],
                    "time": [t + dt.timedelta(minutes=2)],
                    "bkkp_sn": [bed_sn],
                },
                schema_overrides={"time": pl.Datetime("us")},
            )
        )
        new_rows.append(
            pl.DataFrame(
                {"vi": [bvi], "code": [cat.BED], "cnt": [-1], "time": [t + dt.timedelta(minutes=3)], "init": [bed_sn]},
                schema_overrides={"time": pl.Datetime("us")},
            )
        )
        touched |= set(pick["vi"]) | {bvi}

    extra = (
        pl.concat([r for r in new_rows if r.height], how="diagonal_relaxed")
        if any(r.height for r in new_rows)
        else None
    )
    if extra is not None:
        missing = extra["bkkp_sn"].is_null() if "bkkp_sn" in extra.columns else pl.Series([True] * extra.height)
        # number the new rows that have no id yet after the ones that do
        used = set(extra["bkkp_sn"].drop_nulls()) if "bkkp_sn" in extra.columns else set()
        ids: list[str | None] = []
        k = sn0
        for m in missing:
            if m:
                while sn(k) in used:
                    k += 1
                ids.append(sn(k))
                k += 1
            else:
                ids.append(None)
        extra = extra.with_columns(
            pl.coalesce(
                pl.col("bkkp_sn") if "bkkp_sn" in extra.columns else pl.lit(None, pl.Utf8),
                pl.Series(ids, dtype=pl.Utf8),
            ).alias("bkkp_sn")
        )
        data.next_sn = max(k, sn0 + extra.height) + 1
        for c, t in LINE_SCHEMA.items():
            if c not in extra.columns:
                default = {"ownpay_pct": 0, "appr": "1"}.get(c)
                extra = extra.with_columns(pl.lit(default, t).alias(c))
        extra = extra.select([pl.col(c).cast(t) for c, t in LINE_SCHEMA.items()])
        lines = merge_lines(lines, extra)
    lines = lines.with_columns(
        pl.when(pl.col("bkkp_sn").is_in(list(edits_appr) + decoy_appr))
        .then(pl.lit("2"))
        .otherwise(pl.col("appr"))
        .alias("appr"),
        pl.when(pl.col("bkkp_sn").is_in(list(edits_own)))
        .then(pl.lit(20, pl.Int64))
        .otherwise(pl.col("ownpay_pct"))
        .alias("ownpay_pct"),
    )
    touched |= set(np.flatnonzero(not_plain).tolist())
    refunded = v["refunded"].to_numpy().copy()
    refunded[refund_setl] = True
    data.lines = lines
    data.visits = v.with_columns(
        pl.Series("refunded", refunded),
        (~pl.col("vi").is_in(sorted(touched)) & ~pl.Series(refunded)).alias("plain"),
    )
