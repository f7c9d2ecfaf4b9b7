"""The rule set of the fast path compiled into dict indexes: which rule applies to which line.

**Rules.** At startup each type's rules (those at ``pre_alert``) are compiled into indexes by
item code and prefix (plus the match-all rules), each entry with the item's parameters
resolved as :func:`medaudit.engine.register_rules` resolves them (the item's value, else the
rule's). Matching applies the rule's validity period and scope and, for types that take a
line once per rule, the engine's preference (exact code, then prefix, then match-all), as
:func:`medaudit.engine.matched_sql` does.
"""

from __future__ import annotations

from ...library import Item, Rule
from ...semantics import ItemEntry, ItemIndex
from ...types import REGISTRY


# ---------------------------------------------------------------------------- rules


#: one item of one rule (:class:`medaudit.semantics.ItemEntry`)
_Entry = ItemEntry


class CompiledType(ItemIndex):
    """A type's rules as an :class:`~medaudit.semantics.ItemIndex` (matching as the engine matches)."""

    def __init__(self, name: str, dedupe: bool):
        super().__init__(dedupe)
        self.name = name
        self.all_keys: set[int] = set()  # rules without items (they match every line)


def compile_rules(rules: list[Rule]) -> dict[str, CompiledType]:
    """Per type, the rules' items as dict indexes (rule_key = position in ``rules``, as the engine
    numbers them), each with the item's parameters resolved as :func:`medaudit.engine.register_rules`
    resolves them (the item's value, else the rule's)."""
    out: dict[str, CompiledType] = {}
    for key, r in enumerate(rules):
        rt = REGISTRY[r.type]
        ct = out.setdefault(r.type, CompiledType(r.type, rt.dedupe_lines))
        bounded = (
            r.valid_from is not None
            or r.valid_to is not None
            or any(r.scope.get(k) is not None for k in ("med_types", "hosp_levels", "institutions"))
        )
        if not r.items:
            ct.all_keys.add(key)
        its: list[Item | None] = [*r.items] if r.items else [None]
        for it in its:
            params = {
                p.name: (it.params.get(p.name) if it and it.params.get(p.name) is not None else r.params.get(p.name))
                for p in rt.params
            }
            e = ItemEntry(
                key,
                r,
                {**params, "rule_key": key, "item_name": it.name if it else None, "_match_all": it is None},
                bounded,
            )
            if it is None:
                ct.add("all", None, e)
                continue
            if it.code:
                ct.add("code", it.code, e)
            if it.prefix:
                ct.add("prefix", it.prefix, e)
    return out


def matched(ct: CompiledType, lines: list[dict]) -> list[dict]:
    """``{m}`` of the type: line x item rows in force and in scope (a line once per rule when the type dedupes)."""
    return ct.matched(lines)
