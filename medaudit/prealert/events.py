"""The event layer of the pre-alert service, on durable-rules.

Two kinds of event reach the service: an **analysis** (a 3101 request: new orders of a visit)
and a **feedback** (a 3103 answer: the doctor continues, with a reason, or changes the order).
A durable-rules ruleset receives both, in process:

- ``orders``: routes the request to the rule types that can have an opinion on its new orders,
  through an in-memory index of the rule set's item codes and prefixes (and the codes a rule
  names as parameters, such as a duplicate pair's ``main_code``: ordering the main item makes
  an earlier included item a duplicate). Types with rules that take no items, or that name
  none (every line), are always routed. An order no rule cares about costs no SQL at all.
- ``feedback``: a "continue" (``dspo_way`` 1) must carry a reason (上级医师审核); it and a
  "change" (2) are handed to the store.

The rules' meaning is not here: routing only decides which of the types' own SQL queries run
(:mod:`.engine`); a type that is routed but has nothing to say reports nothing.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any, Callable

from durable.engine import MessageNotHandledException
from durable.lang import m, post, ruleset, when_all

from ..library import Rule

_names = itertools.count(1)
_lock = threading.Lock()  # the durable-rules host is one per process and not thread-safe


class Router:
    """Item codes and prefixes of a rule set's rules -> the rule types to run for an order."""

    def __init__(self, rules: list[Rule]):
        self.by_code: dict[str, set[str]] = {}
        self.by_prefix: dict[str, set[str]] = {}
        self.always: set[str] = set()
        for r in rules:
            if r.rule_type.items == "none" or not r.items:
                self.always.add(r.type)
                continue
            for it in r.items:
                if it.code:
                    self.by_code.setdefault(it.code, set()).add(r.type)
                if it.prefix:
                    self.by_prefix.setdefault(it.prefix, set()).add(r.type)
                for name, val in {**r.params, **it.params}.items():
                    # codes named as parameters (duplicate_charge's main_code): ordering that
                    # item changes what the rule says about the visit's other lines
                    if name.endswith("_code") and isinstance(val, str) and val:
                        self.by_code.setdefault(val, set()).add(r.type)
        self.prefix_lengths = sorted({len(p) for p in self.by_prefix})

    def route(self, codes: list[str]) -> list[str]:
        found = set(self.always)
        for code in codes:
            found |= self.by_code.get(code, set())
            for n in self.prefix_lengths:
                found |= self.by_prefix.get(code[:n], set())
        return sorted(found)


class EventHub:
    """The durable-rules ruleset: ``analysis`` events are routed, ``feedback`` events stored."""

    def __init__(self, routers: dict[str, Router], on_feedback: Callable[[dict], None] | None = None):
        self.routers = routers
        self.on_feedback = on_feedback
        self.name = f"medaudit_prealert_{next(_names)}"
        self._out: dict[str, Any] = {}
        hub = self

        with ruleset(self.name):

            @when_all((m.kind == "analysis") & +m.codes)
            def analysis(c):
                hub._out[c.m.token] = hub.routers[c.m.rule_set].route(list(c.m.codes))

            @when_all((m.kind == "feedback") & (m.dspo_way == "1") & +m.dspo_way_rea)
            def continue_with_reason(c):
                hub._out[c.m.token] = hub._feedback(c.m)

            @when_all((m.kind == "feedback") & (m.dspo_way == "2"))
            def change_order(c):
                hub._out[c.m.token] = hub._feedback(c.m)

    def _feedback(self, msg) -> Any:
        data = {k: getattr(msg, k) for k in ("jr_id", "dspo_way", "dspo_way_rea", "warn_type", "fixmedins_code")}
        return self.on_feedback(data) if self.on_feedback else data

    def _post(self, event: dict) -> Any:
        with _lock:
            token = f"t{next(_names)}"
            event = {**{k: v for k, v in event.items() if v is not None}, "token": token}
            try:
                post(self.name, event)
            except MessageNotHandledException:  # no rule took it: e.g. continue without a reason
                return None
            return self._out.pop(token, None)

    def route(self, rule_set: str, codes: list[str]) -> list[str]:
        if not codes:
            return []
        return self._post({"kind": "analysis", "rule_set": rule_set, "codes": codes}) or []

    def feedback(self, jr_id: str, dspo_way: str, dspo_way_rea: str | None, warn_type: str,
                 fixmedins_code: str) -> Any:
        return self._post({"kind": "feedback", "jr_id": jr_id, "dspo_way": dspo_way,
                           "dspo_way_rea": dspo_way_rea or None, "warn_type": warn_type,
                           "fixmedins_code": fixmedins_code})
