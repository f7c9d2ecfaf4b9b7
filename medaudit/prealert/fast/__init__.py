"""The fast pre-alert path: the rule types' meaning evaluated in memory, proven equal to the SQL path.

The SQL path (:mod:`medaudit.prealert.sql_path`) runs the batch engine's own type queries over
a per-request ``lines``: exact by construction, but DuckDB spends milliseconds on every
statement and a check needs about ten. This path answers the same question in plain Python:

- each rule type that can run here has its in-memory evaluator in its own module, beside its
  query (:attr:`medaudit.types.base.RuleType.evaluate`; :data:`EVALUATORS` lists them), built
  on the shared definitions of :mod:`medaudit.semantics`;
- :mod:`.rules`: the rule set compiled once into dict indexes by item code and prefix, with
  per-item parameters resolved;
- :mod:`.context`: the visit's stored context loaded once and cached; a request's ``lines``
  built as :func:`medaudit.engine.prepare_lines` builds them.

Both paths give :class:`~medaudit.prealert.alerts.Hit` rows, turned into alerts by the one
:func:`~medaudit.prealert.alerts.alerts_of`. The path is chosen per rule type
(:class:`medaudit.prealert.checker.OrderChecker`): the types with an evaluator answer here,
the others' queries run on the SQL path in the same request. A request with an order that
replaces a stored line goes wholly to the SQL path (it rebuilds refund netting with the
replacement). ``tests/test_prealert_parity.py`` replays visits through both paths and requires
each to equal batch screening, and compares the two paths on many small random visits.
"""

from __future__ import annotations

from decimal import localcontext
from typing import Any, Callable

import duckdb

from ...library import Rule
from ...types import REGISTRY
from ..alerts import TAG, Alert, CheckRequest, Hit, LineInfo, again_types, alerts_of, claims_before
from ...semantics import WIDE
from .context import ContextCache, Lines, build_lines
from .rules import CompiledType, compile_rules, matched

#: rule type -> its in-memory evaluator (the types whose module defines one); the others run their SQL
EVALUATORS: dict[str, Callable[[Any, list[dict]], list[Hit]]] = {
    name: rt.evaluate for name, rt in REGISTRY.items() if rt.evaluate is not None
}

#: what the one request of a fast check appends to its orders' rx_ids (request number 0 of its run)
ORDER_TAG = TAG + "0"


def covered(rules: list[Rule]) -> bool:
    """Every rule has a fast evaluator."""
    return all(r.type in EVALUATORS for r in rules)


def evaluate(compiled: dict[str, CompiledType], types: list[str], lines: Lines) -> list[Hit]:
    """Hit rows of the types over ``lines`` (as the types' queries give them)."""
    out: list[Hit] = []
    with localcontext(WIDE):
        for t in types:
            ct = compiled.get(t)
            if ct is None:
                continue
            ms = matched(ct, lines.lines)
            if ms or t in ("restrict_indication",):
                out.extend(EVALUATORS[t](lines, ms))
    return out


class FastPath:
    """Checks requests of one service against its rule sets' evaluator types, in memory."""

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        rule_sets: dict[str, list[Rule]],
        ttl: float = 300.0,
        preload: bool = False,
    ):
        self.cache = ContextCache(con, ttl=ttl)
        if preload:
            self.cache.preload()
        self.rule_sets = rule_sets
        self.compiled = {name: compile_rules(rules) for name, rules in rule_sets.items()}
        self.covered = {name: covered(rules) for name, rules in rule_sets.items()}
        # types that judge a person across visits: the person's other visits' lines of their items take part
        self.history_types = {
            name: [ct for t, ct in c.items() if REGISTRY[t].person_history and t in EVALUATORS]
            for name, c in self.compiled.items()
        }

    @staticmethod
    def has(rule_type: str) -> bool:
        """The type has an in-memory evaluator."""
        return rule_type in EVALUATORS

    def can(self, req: CheckRequest) -> bool:
        """The fast path can answer this request's evaluator types exactly (no order replaces a stored line)."""
        ctx = self.cache.get(req.visit["mdtrt_id"], req.visit["psn_no"])
        return not any(o["bkkp_sn"] in ctx.raw_ids for o in req.orders)

    def in_memory(self, req: CheckRequest) -> bool:
        """The fast path answers this request with no database query (its visit's context is in memory)."""
        return self.cache.has(req.visit["mdtrt_id"]) and self.can(req)

    def check(self, rule_set: str, req: CheckRequest, types: list[str]) -> list[Alert]:
        """The alerts (not redacted) of the request's new orders from ``types`` (evaluator types only)."""
        rules = self.rule_sets[rule_set]
        compiled = self.compiled[rule_set]
        if req.rule_ids:
            asked = set(req.rule_ids)
            types = sorted({r.type for r in rules if r.id in asked} & set(types))
        types = [t for t in types if t in compiled and t in EVALUATORS]
        if not types:
            return []
        ctx = self.cache.get(req.visit["mdtrt_id"], req.visit["psn_no"])
        lines, diags, deaths = build_lines(ctx, req, ORDER_TAG)
        history = self.history_types[rule_set]
        if history and ctx.person is not None:  # as the SQL path adds them to its request_fee_list_d
            here = req.visit["mdtrt_id"]
            kept = ctx.person.kept(rule_set, lambda code: any(ct.candidates(code) for ct in history))
            lines += [h for h in kept if h["mdtrt_id"] != here]
        hits = evaluate(compiled, types, Lines(lines, diags, deaths, self.cache))
        new_ids = {ln["bkkp_sn"] for ln in lines if ln["_new"]}
        if not any(h.bkkp_sn in new_ids for h in hits):
            return []
        before = {}
        again = again_types(rules, hits, new_ids)
        if again:
            view_before = Lines([ln for ln in lines if not ln["_new"]], diags, deaths, self.cache)
            before = claims_before(evaluate(compiled, again, view_before))
        order_ids = {ln["bkkp_sn"] for ln in lines if ln["bkkp_sn"].endswith(ORDER_TAG)}
        named = {h.bkkp_sn for h in hits}
        line = {
            ln["bkkp_sn"]: LineInfo(
                ln.get("fee_ocur_time"),
                ln.get("psn_no"),
                ln.get("hilist_code"),
                ln.get("fixmedins_code"),
                ln.get("mdtrt_id"),
                ln.get("fee_date"),
            )
            for ln in lines
            if ln["bkkp_sn"] in named
        }
        wanted = req.rule_ids
        return [
            a for _i, a in alerts_of(rules, hits, line, before, new_ids, order_ids) if not wanted or a.rule_id in wanted
        ]


__all__ = ["FastPath", "EVALUATORS", "covered", "evaluate"]
