"""``medaudit tips``: tips and complaints (举报投诉) and their rewards."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from .. import db as dbm
from ..clihelp import compact_table, fail
from ..hospital_loop import lifecycle
from ..supervision import tips as tp

console = Console()
err = Console(stderr=True)
DbOption = typer.Option(dbm.DEFAULT_DB, "--db", help="DuckDB database file (made by load or screen)")

app = typer.Typer(
    help="Tips and complaints (举报投诉): 受理 → 核查中 → 属实 / 不属实 → 奖励已发放.", no_args_is_help=True
)


RulesOption = typer.Option(
    Path("rules"),
    "--rules",
    help="the rule library the named visits are screened with (the one the nightly screening uses)",
)


@app.command("add")
def add(
    channel: str = typer.Option(..., "--channel", help="电话, 微信, 信箱 or 网站"),
    content: str = typer.Option(..., "--content", help="what the tip says"),
    by: str = typer.Option(..., "--by", help="who receives it"),
    date: Optional[str] = typer.Option(None, "--date", help="day received YYYY-MM-DD (default today)"),
    institution: Optional[str] = typer.Option(None, "--institution", help="the institution named"),
    doctor: Optional[str] = typer.Option(None, "--doctor", help="the doctor named (with --institution)"),
    person: Optional[str] = typer.Option(None, "--person", help="the person named (psn_no)"),
    visit: List[str] = typer.Option([], "--visit", help="a visit named (mdtrt_id; repeatable)"),
    contact: str = typer.Option("", "--contact", help="the tipster's contact: only a masked form is kept"),
    rules: Path = RulesOption,
    db: Path = DbOption,
) -> None:
    """Receive a tip (受理): the named visits are screened with every rule of --rules and their
    findings linked to it (a visit not loaded yet: when the run that loads it screens it)."""
    try:
        day = dt.date.fromisoformat(date) if date else lifecycle.wall_now().date()
    except ValueError:
        fail(f"--date must be a date YYYY-MM-DD, got {date!r}")
    con = dbm.open_existing(db)
    library = _library(rules) if visit else None
    try:
        tid = tp.add(
            con,
            channel=channel,
            received_on=day,
            content=content,
            by=by,
            institution=institution,
            doctor=doctor,
            person=person,
            visits=visit,
            contact=contact,
            library=library,
        )
    except tp.TipError as e:
        fail(str(e))
    t = tp.show(con, tid)
    console.print(
        f"tip {tid} 受理 ({channel}, {day}); {len(t['findings'])} findings linked; contact kept as "
        f"{t['contact_masked'] or '-'}",
        highlight=False,
    )
    _said(t["events"][0]["detail"])


def _library(rules: Path):
    from ..library import RuleLibraryError, load_library

    try:
        return load_library(rules)
    except RuleLibraryError as e:
        fail(f"--rules {rules} (the library the named visits are screened with): " + "; ".join(e.problems))


def _said(detail: dict) -> None:
    """What screening the named visits did, and the visits not loaded yet."""
    for r in detail.get("screened", []):
        console.print(
            f"  screened {r['stage']} (run {r['run_id']}): {r['scope']}; {r['lines']:,} lines, "
            f"{r['new_findings']:,} new findings",
            highlight=False,
            soft_wrap=True,
        )
    if detail.get("visits_not_loaded"):
        console.print(
            f"  not loaded yet (kept; linked when a screening run finds something on them): "
            f"{', '.join(detail['visits_not_loaded'])}",
            highlight=False,
            soft_wrap=True,
        )


@app.command("link")
def link(
    tip_id: int = typer.Argument(..., metavar="TIP"),
    visit: List[str] = typer.Option(..., "--visit", help="a visit to add (mdtrt_id; repeatable)"),
    by: str = typer.Option(..., "--by"),
    rules: Path = RulesOption,
    db: Path = DbOption,
) -> None:
    """Add visits to an open tip (受理, 核查中): screened with every rule, their findings linked."""
    con = dbm.open_existing(db)
    library = _library(rules)
    try:
        d = tp.add_visits(con, tip_id, visit, by, library)
    except tp.TipError as e:
        fail(str(e))
    console.print(
        f"tip {tip_id}: {len(d['visits'])} visit(s) added; {d['linked_findings']} findings linked", highlight=False
    )
    _said(d)


def _move(action: str, tip_id: int, by: str, reason: str, db: Path, **kw) -> None:
    con = dbm.open_existing(db)
    try:
        to = tp.move(con, tip_id, action, by, reason, **kw)
    except tp.TipError as e:
        fail(str(e))
    t = tp.show(con, tip_id)
    extra = f"; reward {t['reward']:,.2f}" if to in ("属实", "奖励已发放") else ""
    console.print(f"tip {tip_id}: {to}{extra}", highlight=False)


@app.command("investigate")
def investigate(
    tip_id: int = typer.Argument(..., metavar="TIP"),
    by: str = typer.Option(..., "--by"),
    reason: str = typer.Option("", "--reason"),
    db: Path = DbOption,
) -> None:
    """受理 → 核查中."""
    _move("investigate", tip_id, by, reason, db)


@app.command("conclude")
def conclude(
    tip_id: int = typer.Argument(..., metavar="TIP"),
    founded: bool = typer.Option(..., "--founded/--unfounded", help="属实 or 不属实"),
    reason: str = typer.Option(..., "--reason", help="what the check found"),
    by: str = typer.Option(..., "--by"),
    recovered: Optional[str] = typer.Option(None, "--recovered", help="属实: the amount recovered (yuan)"),
    nature: Optional[str] = typer.Option(None, "--nature", help="属实: the violation's nature, e.g. 虚构服务"),
    db: Path = DbOption,
) -> None:
    """核查中 → 属实 (credit entries for the named entities; the reward is fixed) or 不属实."""
    if founded:
        _move("found", tip_id, by, reason, db, recovered=recovered, nature=nature)
    else:
        _move("reject", tip_id, by, reason, db)


@app.command("reward")
def reward(
    tip_id: int = typer.Argument(..., metavar="TIP"),
    by: str = typer.Option(..., "--by"),
    reason: str = typer.Option("", "--reason"),
    db: Path = DbOption,
) -> None:
    """属实 → 奖励已发放 (the reward fixed when the tip was found true)."""
    _move("reward", tip_id, by, reason, db)


@app.command("show")
def show(tip_id: int = typer.Argument(..., metavar="TIP"), db: Path = DbOption) -> None:
    """A tip, its linked findings and its history."""
    con = dbm.open_existing(db)
    try:
        t = tp.show(con, tip_id)
    except tp.TipError as e:
        fail(str(e))
    for k in (
        "tip_id",
        "status",
        "received_on",
        "channel",
        "fixmedins_code",
        "dr_code",
        "psn_no",
        "visits",
        "content",
        "contact_masked",
        "nature",
        "recovered",
        "reward",
    ):
        console.print(f"{k}: {'' if t[k] is None else t[k]}", highlight=False, soft_wrap=True)
    for v, st in t["visit_status"].items():
        console.print(f"  visit {v}: {st}", highlight=False, soft_wrap=True)
    console.print(f"findings ({len(t['linked'])}):" + ("" if t["linked"] else " -"), highlight=False)
    for f in t["linked"]:
        amt = (
            "" if f["flagged_amt"] is None else f"flagged {f['flagged_amt']:,.2f}  deduction {f['deduction_amt']:,.2f}"
        )
        console.print(
            f"  {f['finding_id'][:12]}  {f['rule_id'] or ''} {f['rule_name'] or ''}  {f['stage'] or ''}  "
            f"{lifecycle.status_label(f['status']) if f['status'] else ''}  {f['mdtrt_id'] or ''}  {amt}  "
            f"(linked by {f['linked_by'] or '-'}{', ' + f['linked_actor'] if f['linked_by'] == 'tip_link' else ''})",
            highlight=False,
            soft_wrap=True,
        )
    for ev in t["events"]:
        console.print(f"  {ev['event_at']:%Y-%m-%d %H:%M} {ev['actor']} {ev['action']} {ev['reason']}", highlight=False)


@app.command("list")
def list_(
    status: Optional[str] = typer.Option(None, "--status", help="受理, 核查中, 属实, 不属实 or 奖励已发放"),
    db: Path = DbOption,
) -> None:
    """The tips (contacts masked)."""
    con = dbm.open_existing(db)
    try:
        rows = tp.listing(con, status)
    except tp.TipError as e:
        fail(str(e))
    t = compact_table("举报投诉 tips")
    for c in ("tip", "received", "channel", "institution", "doctor", "person", "status", "findings", "reward"):
        t.add_column(c)
    for r in rows:
        t.add_row(
            str(r["tip_id"]),
            str(r["received_on"]),
            r["channel"],
            r["fixmedins_code"] or "",
            r["dr_code"] or "",
            r["psn_no"] or "",
            r["status"],
            str(r["n_findings"]),
            "" if r["reward"] is None else f"{r['reward']:,.2f}",
        )
    console.print(t)


@app.command("settings")
def settings_(
    reward_share: Optional[str] = typer.Option(None, "--reward-share", help="share of the recovered amount, 0..1"),
    reward_floor: Optional[str] = typer.Option(None, "--reward-floor", help="the least reward (yuan)"),
    reward_cap: Optional[str] = typer.Option(None, "--reward-cap", help="the largest reward (yuan)"),
    by: str = typer.Option("medaudit", "--by"),
    reason: str = typer.Option("", "--reason", help="why (required to change)"),
    db: Path = DbOption,
) -> None:
    """Show (or change, logged) the reward rule."""
    con = dbm.open_existing(db)
    values = {
        k: v
        for k, v in (("reward_share", reward_share), ("reward_floor", reward_floor), ("reward_cap", reward_cap))
        if v is not None
    }
    if values:
        try:
            tp.set_settings(con, values, by, reason)
        except tp.TipError as e:
            fail(str(e))
    for k, v in tp.settings(con).items():
        console.print(f"{k} = {v}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="tips")
