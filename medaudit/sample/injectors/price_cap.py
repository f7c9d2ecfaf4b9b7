"""超标准收费 (R-PRC-001): a line's unit price 5% to 40% above the catalogue cap of its level.

Any line of the visit (service items priced by level, drugs and consumables); the catalogue
(``hilist``) caps are the clean prices, so only the edited line is above its cap.
"""

from ..inject import Context, Injector


def inject(ctx: Context) -> None:
    for v in ctx.take_visits(ctx.count()):
        lines = ctx.rows_of(v, lambda r: r["pric"] is None)
        if not lines:
            continue
        row = lines[int(ctx.rng.integers(0, len(lines)))]
        cap = ctx.price(row["code"], v)
        pric = cap + max(1, cap * int(ctx.rng.integers(5, 41)) // 100)
        ctx.edit_line(row["bkkp_sn"], pric=pric)
        ctx.expect(
            "R-PRC-001",
            v,
            row["bkkp_sn"],
            f"{ctx.item(row['code']).name} 单价 {pric / 100:.2f} 元，限价 {cap / 100:.2f} 元",
        )


INJECTOR = Injector("price_cap", inject)
