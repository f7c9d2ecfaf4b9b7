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

app = typer.Typer(help="Tips and complaints (举报投诉): 受理 → 核查中 → 属实 / 不属实 → 奖励已发放.", no_args_is_help=True)


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
    db: Path = DbOption,
) -> None:
    """Receive a tip (受理): the named visits' findings are linked to it."""
    try:
        day = dt.date.fromisoformat(date) if date else lifecycle.wall_now().date()
    except ValueError:
        fail(f"--date must be a date YYYY-MM-DD, got {date!r}")
    con = dbm.open_existing(db)
    try:
        tid = tp.add(con, channel=channel, received_on=day, content=content, by=by, institution=institution,
                     doctor=doctor, person=person, visits=visit, contact=contact)
    except tp.TipError as e:
        fail(str(e))
    t = tp.show(con, tid)
    console.print(f"tip {tid} 受理 ({channel}, {day}); {len(t['findings'])} findings linked; contact kept as "
                  f"{t['contact_masked'] or '-'}", highlight=False)


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
def investigate(tip_id: int = typer.Argument(..., metavar="TIP"), by: str = typer.Option(..., "--by"),
                reason: str = typer.Option("", "--reason"), db: Path = DbOption) -> None:
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
def reward(tip_id: int = typer.Argument(..., metavar="TIP"), by: str = typer.Option(..., "--by"),
           reason: str = typer.Option("", "--reason"), db: Path = DbOption) -> None:
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
    for k in ("tip_id", "status", "received_on", "channel", "fixmedins_code", "dr_code", "psn_no", "visits", "content",
              "contact_masked", "nature", "recovered", "reward"):
        console.print(f"{k}: {'' if t[k] is None else t[k]}", highlight=False, soft_wrap=True)
    console.print("findings: " + (", ".join(f[:12] for f in t["findings"]) or "-"), highlight=False)
    for e in t["events"]:
        console.print(f"  {e['event_at']:%Y-%m-%d %H:%M} {e['actor']} {e['action']} {e['reason']}", highlight=False)


@app.command("list")
def list_(status: Optional[str] = typer.Option(None, "--status", help="受理, 核查中, 属实, 不属实 or 奖励已发放"),
          db: Path = DbOption) -> None:
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
        t.add_row(str(r["tip_id"]), str(r["received_on"]), r["channel"], r["fixmedins_code"] or "", r["dr_code"] or "",
                  r["psn_no"] or "", r["status"], str(r["n_findings"]), "" if r["reward"] is None else f"{r['reward']:,.2f}")
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
    values = {k: v for k, v in (("reward_share", reward_share), ("reward_floor", reward_floor),
                                ("reward_cap", reward_cap)) if v is not None}
    if values:
        try:
            tp.set_settings(con, values, by, reason)
        except tp.TipError as e:
            fail(str(e))
    for k, v in tp.settings(con).items():
        console.print(f"{k} = {v}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="tips")
