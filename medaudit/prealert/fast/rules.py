"""The rule set of the fast path compiled into dict indexes: which rule applies to which line.

**Rules.** At startup each type's rules (those at ``pre_alert``) are compiled into indexes by
item code and prefix (plus the match-all rules), each entry with the item's parameters
resolved as :func:`medaudit.engine.register_rules` resolves them (the item's value, else the
rule's). Matching applies the rule's validity period and scope and, for types that take a
line once per rule, the engine's preference (exact code, then prefix, then match-all), as
:func:`medaudit.engine.matched_sql` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...library import Rule
from ...types import REGISTRY


# ---------------------------------------------------------------------------- rules


@dataclass
class _Entry:
    rule_key: int
    rule: Rule
    params: dict[str, Any]
    item_name: str | None
    #: what a matched row adds to its line: the resolved parameters, rule key, item name (set by compile_rules)
    row: dict[str, Any] = field(default_factory=dict)
    #: the rule has a validity period or a scope (else every line is in scope)
    bounded: bool = True


@dataclass
class CompiledType:
    name: str
    dedupe: bool
    by_code: dict[str, list[_Entry]] = field(default_factory=dict)
    by_prefix: dict[str, list[_Entry]] = field(default_factory=dict)
    match_all: list[_Entry] = field(default_factory=list)
    prefix_lengths: list[int] = field(default_factory=list)
    all_keys: set[int] = field(default_factory=set)  # rules without items (they match every line)
    #: code -> the entries that can match it (exact code, then prefixes, then match-all), found once per code
    _candidates: dict[str, tuple[_Entry, ...]] = field(default_factory=dict)

    def candidates(self, code: str) -> tuple[_Entry, ...]:
        found = self._candidates.get(code)
        if found is None:
            lst = list(self.by_code.get(code, ()))
            for n in self.prefix_lengths:
                lst.extend(self.by_prefix.get(code[:n], ()))
            lst.extend(self.match_all)
            found = self._candidates[code] = tuple(lst)
        return found


def compile_rules(rules: list[Rule]) -> dict[str, CompiledType]:
    """Per type, the rules' items as dict indexes (rule_key = position in ``rules``, as the engine numbers them)."""
    out: dict[str, CompiledType] = {}
    for key, r in enumerate(rules):
        rt = REGISTRY[r.type]
        ct = out.setdefault(r.type, CompiledType(r.type, rt.dedupe_lines))
        for it in (r.items or [None]):
            params = {p.name: (it.params.get(p.name) if it and it.params.get(p.name) is not None else r.params.get(p.name))
                      for p in rt.params}
            e = _Entry(key, r, params, it.name if it else None)
            if it is None:
                ct.match_all.append(e)
                ct.all_keys.add(key)
                continue
            if it.code:
                ct.by_code.setdefault(it.code, []).append(e)
            if it.prefix:
                ct.by_prefix.setdefault(it.prefix, []).append(e)
    for ct in out.values():
        ct.prefix_lengths = sorted({len(p) for p in ct.by_prefix})
        for e in [*ct.match_all, *(e for es in ct.by_code.values() for e in es),
                  *(e for es in ct.by_prefix.values() for e in es)]:
            e.row = {**e.params, "rule_key": e.rule_key, "item_name": e.item_name,
                     "_match_all": e.rule_key in ct.all_keys}
            r = e.rule
            e.bounded = (r.valid_from is not None or r.valid_to is not None
                         or any(r.scope.get(k) is not None for k in ("med_types", "hosp_levels", "institutions")))
    return out


def _in_scope(r: Rule, line: dict) -> bool:
    d = line["fee_date"]
    if r.valid_from is not None and d < r.valid_from:
        return False
    if r.valid_to is not None and d > r.valid_to:
        return False
    sc = r.scope
    if sc.get("med_types") is not None and line["med_type"] not in sc["med_types"]:
        return False
    if sc.get("hosp_levels") is not None and line["inst_level"] not in sc["hosp_levels"]:
        return False
    if sc.get("institutions") is not None and line["fixmedins_code"] not in sc["institutions"]:
        return False
    return True


def matched(ct: CompiledType, lines: list[dict]) -> list[dict]:
    """``{m}`` of the type: line x item rows in force and in scope (a line once per rule when the type dedupes)."""
    out = []
    known = ct._candidates
    dedupe = ct.dedupe
    for ln in lines:
        cands = known.get(ln["hilist_code"])
        if cands is None:
            cands = ct.candidates(ln["hilist_code"])
        if not cands:
            continue
        seen: set[int] = set()
        for e in cands:
            if dedupe and e.rule_key in seen:
                continue
            if e.bounded and not _in_scope(e.rule, ln):
                continue
            seen.add(e.rule_key)
            out.append({**ln, **e.row})
    return out
