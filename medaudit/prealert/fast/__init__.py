"""The fast pre-alert path: the rule types' meaning evaluated in memory, proven equal to the SQL path.

The SQL path (:mod:`medaudit.prealert.engine`) runs the batch engine's own type queries over a
per-request ``lines``: exact by construction, but DuckDB spends milliseconds on every statement
and a check needs about ten. This path answers the same question in plain Python:

- :mod:`.evaluators`: one evaluator per rule type that can run at ``pre_alert``, registered by
  type name (:data:`~.evaluators.EVALUATORS`), each a transcription of its type's query;
- :mod:`.checker`: the rule set compiled once into dict indexes by item code and prefix with
  per-item parameters resolved; the visit's stored context loaded once and cached; a request's
  ``lines`` built as :func:`medaudit.engine.prepare_lines` builds them.

The rule library (YAML) stays the one definition of every rule, and the types' docstrings and
SQL its reference meaning. :class:`FastPath` is used for a request only when every rule of the
requested set has an evaluator (and no order replaces a stored line); otherwise the SQL path
answers. ``tests/test_prealert_parity.py`` replays visits through both paths and requires each
to equal batch screening, and compares the two paths on many small random visits.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import duckdb

from ...library import Rule
from ...types import REGISTRY
from .checker import ContextCache, Lines, build_lines, compile_rules, evaluate
from .evaluators import EVALUATORS

#: tag of a request's orders (as the SQL path tags them: the hospital's rx_id, a separator, the request's number)
TAG = "\x1f0"


def _cent(x) -> Decimal:
    return Decimal(str(x if x is not None else 0)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def covered(rules: list[Rule]) -> bool:
    """Every rule has a fast evaluator."""
    return all(r.type in EVALUATORS for r in rules)


class FastPath:
    """Checks requests of one service against its rule sets in memory."""

    def __init__(self, con: duckdb.DuckDBPyConnection, rule_sets: dict[str, list[Rule]], ttl: float = 300.0,
                 preload: bool = False):
        self.cache = ContextCache(con, ttl=ttl)
        if preload:
            self.cache.preload()
        self.rule_sets = rule_sets
        self.compiled = {name: compile_rules(rules) for name, rules in rule_sets.items()}
        self.covered = {name: covered(rules) for name, rules in rule_sets.items()}
        # types that judge a person across visits: the person's other visits' lines of their items take part
        self.history_types = {name: [ct for t, ct in c.items() if REGISTRY[t].person_history]
                              for name, c in self.compiled.items()}

    def can(self, rule_set: str, req) -> bool:
        """The fast path can answer this request exactly."""
        rules = self.rule_sets[rule_set]
        if req.rule_ids:
            wanted = set(req.rule_ids)
            if not covered([r for r in rules if r.id in wanted]):
                return False
        elif not self.covered[rule_set]:
            return False
        ctx = self.cache.get(req.visit["mdtrt_id"], req.visit["psn_no"])
        return not any(o["bkkp_sn"] in ctx.raw_ids for o in req.orders)

    def in_memory(self, rule_set: str, req) -> bool:
        """The fast path answers this request with no database query (its visit's context is in memory)."""
        return self.cache.has(req.visit["mdtrt_id"]) and self.can(rule_set, req)

    def check(self, rule_set: str, req, types: list[str]):
        """The alerts (as :meth:`OrderChecker.check` returns them) of the request's new orders."""
        from ..engine import OrderChecker

        rules = self.rule_sets[rule_set]
        compiled = self.compiled[rule_set]
        if req.rule_ids:
            wanted = set(req.rule_ids)
            types = sorted({r.type for r in rules if r.id in wanted} & set(types))
        types = [t for t in types if t in compiled]
        ctx = self.cache.get(req.visit["mdtrt_id"], req.visit["psn_no"])
        lines, diags, deaths = build_lines(ctx, req, TAG)
        history = self.history_types[rule_set]
        if history and ctx.person is not None:  # as the SQL path adds them to its fee_list_d shadow
            here = req.visit["mdtrt_id"]
            kept = ctx.person.kept(rule_set, lambda code: any(ct.candidates(code) for ct in history))
            lines += [h for h in kept if h["mdtrt_id"] != here]
        view = Lines(lines, diags, deaths, self.cache)
        hits = evaluate(compiled, types, view)
        new_ids = {ln["bkkp_sn"] for ln in lines if ln["_new"]}
        by_sn = {ln["bkkp_sn"]: ln for ln in lines}
        touched = {(h[0], h[1]) for h in hits if h[3] in new_ids}
        if not touched:
            return []
        # one row per (finding, line), as OrderChecker._hit_rows groups the hits
        grouped: dict[tuple, dict] = {}
        for rk, fk, md, sn, role, claim, head, ev in hits:
            if (rk, fk) not in touched:
                continue
            g = grouped.setdefault((rk, fk, sn), {"md": md, "v": False, "claim": None, "head": head, "ev": []})
            g["md"] = g["md"] or md
            if role == "violating":
                g["v"] = True
                g["claim"] = claim if g["claim"] is None else max(g["claim"], claim)
            if ev is not None and ev not in g["ev"]:
                g["ev"].append(ev)
        rows = []
        for (rk, fk, sn), g in grouped.items():
            ln = by_sn.get(sn, {})
            rows.append((rk, fk, g["md"], sn, "violating" if g["v"] else "related",
                         g["claim"] if g["claim"] is not None else Decimal(0), g["head"],
                         "；".join(g["ev"]) if g["ev"] else None, ln.get("fee_ocur_time"), ln.get("psn_no"), None,
                         ln.get("hilist_code"), ln.get("fixmedins_code"), ln.get("mdtrt_id"), ln.get("fee_date")))
        rows.sort(key=lambda r: (r[0], r[1], r[8] is None, r[8] or 0, r[3]))
        before: dict[tuple, Decimal] = {}
        again = sorted({rules[r[0]].type for r in rows if r[4] == "violating" and r[3] not in new_ids})
        if again:
            view_before = Lines([ln for ln in lines if not ln["_new"]], diags, deaths, self.cache)
            for rk, _fk, _md, sn, role, claim, *_ in evaluate(compiled, again, view_before):
                if role == "violating":
                    c = _cent(claim)
                    before[(rk, sn)] = max(before.get((rk, sn), c), c)
        order_ids = {ln["bkkp_sn"] for ln in lines if ln["bkkp_sn"].endswith(TAG) and "\x1f" in ln["bkkp_sn"]}
        alerts = OrderChecker._alerts(rules, rows, before, new_ids, order_ids)
        wanted = req.rule_ids
        return [a for _i, a in alerts if not wanted or a.rule_id in wanted]


__all__ = ["FastPath", "EVALUATORS", "covered"]
