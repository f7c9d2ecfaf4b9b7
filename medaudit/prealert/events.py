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
(:mod:`.checker` chooses, per type, the fast or the SQL path); a type that is routed but has nothing to say reports nothing.

**Without durable-rules.** durable-rules is a C extension that does not build or load on every
Python (3.13 removed ``PyEval_CallObject``, which it calls). Where it cannot be imported, or with
the environment variable ``MEDAUDIT_EVENTS=python``, the same three rules run as plain Python
(:meth:`EventHub._dispatch`): the same events, the same conditions, the same answers
(``tests/test_prealert_his.py`` runs both; CI runs the service tests on 3.13 when it exists).
"""

from __future__ import annotations

import itertools
import os
import threading
from typing import Any, Callable

from ..library import Rule

try:
    from durable.engine import MessageNotHandledException
    from durable.lang import m, post, ruleset, when_all
except ImportError:  # not installed, or its C extension does not load on this Python (3.13)
    DURABLE = False
else:
    DURABLE = True


def use_durable() -> bool:
    """durable-rules routes the events (else the plain-Python rules): when it imports and
    ``MEDAUDIT_EVENTS`` is not ``python``."""
    return DURABLE and os.environ.get("MEDAUDIT_EVENTS", "").strip().lower() != "python"


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


FEEDBACK_FIELDS = ("jr_id", "dspo_way", "dspo_way_rea", "warn_type", "fixmedins_code")


def _fields(event: dict) -> dict:
    return {k: event.get(k) for k in FEEDBACK_FIELDS}


class EventHub:
    """The event rules: ``analysis`` events are routed, ``feedback`` events stored (on durable-rules,
    or the same rules in plain Python: see the module's doc)."""

    def __init__(self, routers: dict[str, Router], on_feedback: Callable[[dict], None] | None = None):
        self.routers = routers
        self.on_feedback = on_feedback
        self.name = f"medaudit_prealert_{next(_names)}"
        self._out: dict[str, Any] = {}
        self.durable = use_durable()
        if self.durable:
            self._declare()

    def _declare(self) -> None:
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
        data = {k: getattr(msg, k) for k in FEEDBACK_FIELDS}
        return self.on_feedback(data) if self.on_feedback else data

    def _dispatch(self, event: dict) -> Any:
        """The rules of :meth:`_declare` in plain Python (``None``: no rule takes the event)."""
        if event.get("kind") == "analysis" and event.get("codes"):
            return self.routers[event["rule_set"]].route(list(event["codes"]))
        if event.get("kind") == "feedback":
            if (event.get("dspo_way") == "1" and event.get("dspo_way_rea")) or event.get("dspo_way") == "2":
                return self.on_feedback(_fields(event)) if self.on_feedback else _fields(event)
        return None

    def _post(self, event: dict) -> Any:
        if not self.durable:
            return self._dispatch({k: v for k, v in event.items() if v is not None})
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

    def feedback(self, jr_id: str, dspo_way: str, dspo_way_rea: str | None, warn_type: str, fixmedins_code: str) -> Any:
        return self._post(
            {
                "kind": "feedback",
                "jr_id": jr_id,
                "dspo_way": dspo_way,
                "dspo_way_rea": dspo_way_rea or None,
                "warn_type": warn_type,
                "fixmedins_code": fixmedins_code,
            }
        )
