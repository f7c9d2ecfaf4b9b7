"""Shared by the scope-restriction injectors: bill a restricted item where it is not allowed."""

from __future__ import annotations

import polars as pl

from ..inject import Context


def bill_item(ctx: Context, rule_id: str, n: int, where: pl.Expr, code: str, note: str, cnt: int = 1) -> int:
    """Add one line of ``code`` to each of ``n`` plain visits matching ``where``; key each line."""
    done = 0
    for v in ctx.take_visits(n, where):
        sn = ctx.add_line(v, code, ctx.time_in(v), cnt)
        ctx.expect(rule_id, v, sn, note.format(**v, name=ctx.item(code).name))
        done += 1
    return done


def split(n: int, parts: int) -> list[int]:
    """Split n into ``parts`` near-equal counts, the first ones larger, none below 1 when n >= parts."""
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]
