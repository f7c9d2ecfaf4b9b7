"""What a pre-alert check takes and gives, shared by both paths: requests, hits, alerts.

Both paths produce :class:`Hit` rows — the in-memory evaluators (:mod:`.fast`) in Python, the
rule types' queries (:mod:`.sql_path`) in the ``hits`` table, with the same columns
(:data:`medaudit.types.base.HIT_COLUMNS`) — and :func:`alerts_of` turns the hits of the
findings a request's new orders touch into :class:`Alert` objects, once for both paths: the
one grouping of hits into (finding, line) rows, the one comparison with the claims before
the new orders, the one evidence text. :func:`redact` is what an institution may see of
another institution's lines.

**What is reported.** A finding is reported when the new orders change it: its lines that are
violating now but were not violating (or claimed less) before the new orders — computed by
running the touched types again without the new orders — are the violating items
(``vola_item_type`` 1); the new orders and the finding's related lines are the related items
(2). So an order that makes an earlier charge a duplicate (the main item of a pair, ordered
after the included one) is reported with the earlier charge as the violating item, and an
order that breaks nothing is silent.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Iterable, NamedTuple

from ..library import Rule
from ..types.base import Hit  # noqa: F401  (the hit row both paths produce)

#: between an order's rx_id and its request's number in a run (sorts before printable text)
TAG = "\x1f"

_UNTAG = re.compile(TAG + r"\d+")

#: settlement id given to orders (not settled yet, so not in ``setl_d``)
ORDER_SETL = "PRE:"

#: how the answer to an institution names a line of another institution (period_limit's history)
OTHER_INSTITUTION = "其他机构"


def tagged(rx_id: str, request_no: int) -> str:
    """An order's id in a run: the hospital's rx_id, :data:`TAG`, the request's number in the run."""
    return f"{rx_id}{TAG}{request_no}"


class RuleSetError(Exception):
    """An unknown rule set or rule id (the service answers 404/422, never 500)."""


class ForeignVisitError(Exception):
    """A request names a visit the database holds for another institution (the service answers 403)."""

    def __init__(self, mdtrt_id: str):
        self.mdtrt_id = mdtrt_id
        super().__init__(
            f"visit {mdtrt_id!r} belongs to another institution: an API key may use the stored "
            "visits of its own institution only"
        )


@dataclass
class CheckRequest:
    """One analysis request in the data contract's terms (built from a 3101 payload)."""

    visit: dict[str, Any]  # mdtrt_d columns of the current visit
    orders: list[dict[str, Any]]  # fee_list_d columns, plus 'new': bool
    diagnoses: list[dict[str, Any]] = field(default_factory=list)  # setl_list_diag_d columns
    rule_ids: list[str] | None = None  # only these rules (national ``rule_ids``); None: all
    engine: str | None = None  # set by the check: 'fast', 'sql' or 'fast+sql', the paths that answered
    operations: list[dict[str, Any]] = field(default_factory=list)  # setl_list_oprn_d columns


class LineInfo(NamedTuple):
    """What an alert shows of a line of ``lines`` besides its hits (``None`` fields: not a line)."""

    fee_ocur_time: dt.datetime | None = None
    psn_no: str | None = None
    hilist_code: str | None = None
    fixmedins_code: str | None = None
    mdtrt_id: str | None = None
    fee_date: dt.date | None = None


NO_LINE = LineInfo()


@dataclass
class ItemHit:
    bkkp_sn: str  # the order's rx_id, or the line's bkkp_sn
    role: str  # violating | related
    claim: Decimal  # 0.01-rounded claim (0 for related)
    is_order: bool  # one of the request's orders (new or earlier)
    is_new: bool
    hilist_code: str | None = None


@dataclass(frozen=True)
class LineRef:
    """Where a line of a finding comes from: what the answer to another institution must not show."""

    bkkp_sn: str  # as shown (an order's rx_id without its tag)
    role: str
    fixmedins_code: str | None
    mdtrt_id: str | None
    fee_date: dt.date | None


@dataclass
class Alert:
    """One reported finding: a rule the new orders break on this visit."""

    rule_id: str
    rule_version: str
    rule_name: str
    rule_type: str
    severity: str
    nature: str
    basis: str
    mdtrt_id: str
    psn_no: str
    finding_key: str
    evidence: str
    amount: Decimal  # sum of the violating items' claims
    items: list[ItemHit]
    #: every line of the finding (items or not) with its institution, visit and date: see :func:`redact`
    lines: list[LineRef] = field(default_factory=list, repr=False)
    #: the rule's position in its rule set (alerts of both paths are merged in this order)
    rule_key: int = field(default=-1, repr=False)

    @property
    def violating(self) -> list[ItemHit]:
        return [i for i in self.items if i.role == "violating"]


def cent(x: Any) -> Decimal:
    return Decimal(str(x if x is not None else 0)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def as_date(x: Any) -> dt.date | None:
    if x is None or (isinstance(x, dt.date) and not isinstance(x, dt.datetime)):
        return x
    if isinstance(x, dt.datetime):
        return x.date()
    return dt.date.fromisoformat(str(x)[:10])


# ---------------------------------------------------------------------------- hits -> alerts


@dataclass
class _FindingLine:
    """The hits of one line in one finding, grouped (as batch screening's ``hit_lines``)."""

    mdtrt_id: str | None
    psn_no: str | None
    ev_head: str | None
    violating: bool = False
    claim: Decimal | None = None  # largest violating claim
    ev_lines: list[str] = field(default_factory=list)  # distinct, in the order given


def touched(hits: Iterable[Hit], new_ids: set[str]) -> set[tuple[int, str]]:
    """(rule_key, finding_key) of the findings a new order takes part in."""
    return {(h.rule_key, h.finding_key) for h in hits if h.bkkp_sn in new_ids}


def claims_before(hits: Iterable[Hit]) -> dict[tuple[int, str], Decimal]:
    """(rule_key, bkkp_sn) -> the line's largest violating claim (cents) in ``hits`` (a run without the new orders)."""
    out: dict[tuple[int, str], Decimal] = {}
    for h in hits:
        if h.role == "violating":
            c = cent(h.claim)
            k = (h.rule_key, h.bkkp_sn)
            if k not in out or c > out[k]:
                out[k] = c
    return out


def again_types(rules: list[Rule], hits: Iterable[Hit], new_ids: set[str]) -> list[str]:
    """Types to run again without the new orders: those of touched findings with violating
    lines other than the new orders (were they violating before?)."""
    t = touched(hits, new_ids)
    return sorted(
        {
            rules[h.rule_key].type
            for h in hits
            if (h.rule_key, h.finding_key) in t and h.role == "violating" and h.bkkp_sn not in new_ids
        }
    )


def alerts_of(
    rules: list[Rule],
    hits: Iterable[Hit],
    line: dict[str, LineInfo],
    before: dict[tuple[int, str], Decimal],
    new_ids: set[str],
    order_ids: set[str],
) -> list[tuple[int, Alert]]:
    """(request number, alert) for each finding a new order touches that has a newly violating line.

    ``hits``: every hit of the run (either path); ``line``: :class:`LineInfo` by bkkp_sn;
    ``before``: :func:`claims_before` of the touched types run without the new orders;
    ``new_ids``/``order_ids``: the (tagged) ids of the new orders / of all the request's orders.
    Alerts come in the order of (rule_key, finding_key); a finding's items in time order."""
    hits = list(hits)
    keep = touched(hits, new_ids)
    grouped: dict[tuple[int, str], dict[str, _FindingLine]] = {}
    for h in hits:
        fk = (h.rule_key, h.finding_key)
        if fk not in keep:
            continue
        lines = grouped.setdefault(fk, {})
        g = lines.get(h.bkkp_sn)
        if g is None:
            g = lines[h.bkkp_sn] = _FindingLine(h.mdtrt_id, h.psn_no, h.ev_head)
        # the first value that is not NULL (as DuckDB's any_value)
        g.mdtrt_id = g.mdtrt_id if g.mdtrt_id is not None else h.mdtrt_id
        g.psn_no = g.psn_no if g.psn_no is not None else h.psn_no
        g.ev_head = g.ev_head if g.ev_head is not None else h.ev_head
        if h.role == "violating":
            g.violating = True
            g.claim = h.claim if g.claim is None else max(g.claim, h.claim)
        if h.ev_line is not None and h.ev_line not in g.ev_lines:
            g.ev_lines.append(h.ev_line)

    out: list[tuple[int, Alert]] = []
    for key, fkey in sorted(grouped):
        rule = rules[key]
        members = grouped[(key, fkey)]
        order = sorted(
            members,
            key=lambda sn: (line.get(sn, NO_LINE).fee_ocur_time is None, line.get(sn, NO_LINE).fee_ocur_time or 0, sn),
        )
        items: list[ItemHit] = []
        refs: list[LineRef] = []
        ev_lines: list[str] = []
        head = psn = mdtrt = ""
        req_no = None
        for sn in order:
            g, ln = members[sn], line.get(sn, NO_LINE)
            head = head or (g.ev_head or "")
            psn = psn or ln.psn_no or g.psn_no or ""
            mdtrt = mdtrt or g.mdtrt_id or ""
            is_order = sn in order_ids
            shown = sn.rsplit(TAG, 1)[0] if is_order else sn  # the hospital's own rx_id
            refs.append(
                LineRef(
                    shown,
                    "violating" if g.violating else "related",
                    ln.fixmedins_code,
                    ln.mdtrt_id,
                    as_date(ln.fee_date),
                )
            )
            if sn in new_ids:
                req_no = int(sn.rsplit(TAG, 1)[1])
            c = cent(g.claim) if g.violating else Decimal("0.00")
            if g.violating and c > before.get((key, sn), Decimal("-1")):
                items.append(ItemHit(shown, "violating", c, is_order, sn in new_ids, ln.hilist_code))
                if g.ev_lines:
                    ev_lines.append("；".join(g.ev_lines))
            elif not g.violating or sn in new_ids:
                items.append(ItemHit(shown, "related", Decimal("0"), is_order, sn in new_ids, ln.hilist_code))
        if req_no is None or not any(i.role == "violating" for i in items):
            continue
        # the hospital's own ids in the text (an evidence line may name an order by its tagged id)
        evidence = _UNTAG.sub("", "；".join(x for x in [head, *ev_lines] if x))
        out.append(
            (
                req_no,
                Alert(
                    rule.id,
                    rule.version,
                    rule.name,
                    rule.type,
                    rule.severity,
                    rule.nature,
                    rule.basis,
                    mdtrt,
                    psn,
                    fkey,
                    evidence,
                    sum((i.claim for i in items), Decimal("0.00")),
                    items,
                    refs,
                    key,
                ),
            )
        )
    return out


def merged(*parts: list[Alert]) -> list[Alert]:
    """Alerts of several paths for one request, in the order one path gives them (rule, finding)."""
    return sorted((a for p in parts for a in p), key=lambda a: (a.rule_key, a.finding_key))


# ---------------------------------------------------------------------------- other institutions


def redact(alert: Alert, institution: str, mdtrt_id: str) -> Alert:
    """The alert as the pre-alert service may show it to ``institution`` (checking its visit ``mdtrt_id``).

    A finding may include lines of the person's visits at other institutions (period_limit counts
    the units paid anywhere). The answer may say that, and when, the item was paid elsewhere —
    never another institution's line ids, visit ids, code, prices or amounts:

    - its lines are not items of the answer (``judge_result_detail_dtos``);
    - the evidence names such a line ``2026-03-01 其他机构`` where batch screening writes
      ``2026-03-01 H002 就诊 V7`` (the bureau's post-hoc evidence keeps it all);
    - when the text would still show one of those ids, or the finding's newly violating line
      is itself another institution's (an order dated before a unit paid elsewhere makes that
      unit excess), the evidence is only the rule's name and the dates of the lines elsewhere,
      and the amount counts the institution's own violating lines only.

    A line with no institution counts as another institution's unless it is on the visit
    checked. Lines of the institution's own other visits are shown as they are.
    """

    def foreign(inst: str | None, visit: str | None) -> bool:
        return inst != institution and not (inst is None and visit == mdtrt_id)

    others = [r for r in alert.lines if foreign(r.fixmedins_code, r.mdtrt_id)]
    if not others:
        return alert
    gone = {r.bkkp_sn for r in others}
    text = alert.evidence
    for r in others:
        if r.fee_date is not None:
            text = text.replace(
                f"{r.fee_date:%Y-%m-%d} {r.fixmedins_code} 就诊 {r.mdtrt_id}",
                f"{r.fee_date:%Y-%m-%d} {OTHER_INSTITUTION}",
            )
    shown = [x for r in others for x in (r.bkkp_sn, r.fixmedins_code, r.mdtrt_id) if x]
    if any(r.role == "violating" for r in others) or any(x in text for x in shown):
        dates = sorted({f"{r.fee_date:%Y-%m-%d}" for r in others if r.fee_date is not None})
        text = f"{alert.rule_name}：涉及{OTHER_INSTITUTION}已结算的收费" + (f"（{'、'.join(dates)}）" if dates else "")
    items = [i for i in alert.items if i.is_order or i.bkkp_sn not in gone]
    own_visit = alert.mdtrt_id not in {r.mdtrt_id for r in others}
    return Alert(
        alert.rule_id,
        alert.rule_version,
        alert.rule_name,
        alert.rule_type,
        alert.severity,
        alert.nature,
        alert.basis,
        alert.mdtrt_id if own_visit else mdtrt_id,
        alert.psn_no,
        alert.finding_key if own_visit else mdtrt_id,
        text,
        sum((i.claim for i in items if i.role == "violating"), Decimal("0.00")),
        items,
        [r for r in alert.lines if r.bkkp_sn not in gone],
        alert.rule_key,
    )
