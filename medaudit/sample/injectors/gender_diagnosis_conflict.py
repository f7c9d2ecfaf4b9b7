"""性别与诊断不符 (R-GDX-001): a man's visit coded with 急性阴道炎 (N76.000, female-only
N70-N98), a woman's with 前列腺增生 (N40.x00, male-only N40-N53), added as another diagnosis of
the settlement list. Every line of the (plain) visit is violating.

Near miss, not flagged: the same diagnoses for persons of unknown (0) or unstated (9) gender."""

import polars as pl

from ..inject import Context, Injector
from ._common import split

DIAGS = {"1": ("N76.000", "急性阴道炎"), "2": ("N40.x00", "前列腺增生")}


def inject(ctx: Context) -> None:
    a, b = split(ctx.count(), 2)
    for gend, n in (("1", a), ("2", b)):
        code, name = DIAGS[gend]
        for v in ctx.take_visits(n, pl.col("gend") == gend):
            ctx.add_row(
                "setl_list_diag_d",
                mdtrt_id=v["mdtrt_id"],
                setl_id=v["setl_id"],
                diag_type="1",
                maindiag_flag="0",
                diag_code=code,
                diag_name=name,
            )
            for sn in ctx.lines_of(v)["bkkp_sn"]:
                ctx.expect("R-GDX-001", v, sn, f"{'男' if gend == '1' else '女'}性患者诊断 {code} {name}")
    for (code, name), v in zip(DIAGS.values(), ctx.take_visits(2, pl.col("gend").is_in(["0", "9"]))):
        ctx.add_row(
            "setl_list_diag_d",
            mdtrt_id=v["mdtrt_id"],
            setl_id=v["setl_id"],
            diag_type="1",
            maindiag_flag="0",
            diag_code=code,
            diag_name=name,
        )


INJECTOR = Injector("gender_diagnosis_conflict", inject, rate=0.01)
