"""Checks shared by the command modules' options (the values are refused before anything runs)."""

from __future__ import annotations

import re
from typing import Iterable, NoReturn, Optional

import typer
from rich import box
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from .hospital_loop import lifecycle

_PERIOD = re.compile(r"(?P<y>\d{4})-(?P<m>0[1-9]|1[0-2])")


def check_period(value: Optional[str]) -> Optional[str]:
    """``--period``: a settlement month written YYYY-MM (2026-03), as ``findings.period`` stores it."""
    if value is None:
        return None
    v = value.strip()
    if not _PERIOD.fullmatch(v):
        raise typer.BadParameter(f"{value!r} is not a month written YYYY-MM (e.g. 2026-03)")
    return v


#: what a terminal acts on (C0 and C1 controls, DEL: escape sequences set its title, colours,
#: links, clipboard) and the bidirectional overrides that reorder the text after them
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def plain(value) -> str:
    """A value from claim data or an option, safe to print on a terminal: every control
    character and bidirectional override shown as its escape (``\\x1b``, ``\\u202e``)."""
    s = "" if value is None else str(value)
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), s)


_err = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """The one way a command stops on bad input: ``error: MESSAGE`` on stderr, exit ``code`` (2).

    The message is printed as plain text (values from claim data or options carry brackets and
    control characters: neither is read as markup nor reaches the terminal raw)."""
    _err.print(Text.assemble(("error:", "bold red"), " ", plain(message)), highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def compact_table(title: str | None = None) -> Table:
    """A table with a rule under the header only and no outer frame: fewer lines, fits 80 columns."""
    return Table(
        title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True, title_justify="left"
    )


def print_finding(console: Console, r: dict, notes: Iterable[str] = ()) -> None:
    """One finding as a block: a heading line (id, rule, severity, 状态 (code), institution, visit or
    period, amounts; it wraps at narrow widths), then its notes and evidence indented at the full
    width of the terminal (never a narrow table column). ``r`` holds the findings columns by name."""
    sev = "违规" if r.get("severity") == "violation" else "可疑"
    head = Text.assemble(
        ((r.get("finding_id") or "")[:12], "bold"),
        "  ",
        (r.get("rule_id") or "", "cyan"),
        f" {sev}  ",
        lifecycle.status_label(r.get("status")),
        "  ",
        r.get("fixmedins_code") or "",
    )
    for k in ("mdtrt_id", "period"):
        if r.get(k):
            head.append(f" {r[k]}")
    for k, label in (("flagged_amt", "flagged"), ("deduction_amt", "deduction"), ("at_risk", "at risk")):
        if r.get(k) is not None:
            head.append(f"  {label} {r[k]:,.2f}")
    console.print(head, overflow="fold")
    body = [n for n in notes if n] + [r.get("evidence") or ""]
    console.print(Padding(Text("\n".join(body)), (0, 0, 1, 2)), overflow="fold")


def history_table(events: list[dict], title: str | None = None) -> Table:
    """A finding's audit log (``lifecycle.history``): when, 动作 (code), new 状态 (code), who and why."""
    t = compact_table(title)
    t.add_column("when", no_wrap=True)
    t.add_column("action", overflow="fold")
    t.add_column("status", overflow="fold")
    t.add_column("by / reason / attachments", overflow="fold")
    for e in events:
        when = e["event_at"].strftime("%Y-%m-%d %H:%M") if e["event_at"] else ""
        if e.get("as_of"):
            when += f" (as of {e['as_of']})"  # the simulated day the move was judged on
        who = (e["actor"] or "") + (f": {e['reason']}" if e["reason"] else "")
        for a in e["attachments"]:
            who += f"\n{a.get('name', '')} sha256:{str(a.get('sha256', ''))[:16]}…"
        status = lifecycle.status_label(e["to_status"])
        if e.get("from_status"):
            status = f"from {lifecycle.status_label(e['from_status'])}\nto {status}"
        t.add_row(when, Text(lifecycle.action_label(e["action"])), Text(status), Text(who))
    return t
