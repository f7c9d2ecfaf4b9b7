"""The injection context: what an injector may read and how it adds violations.

See the package docstring (:mod:`medaudit.sample`) for the contract of an injector.
"""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np
import polars as pl

from . import catalog as cat
from .clean import LINE_SCHEMA, CleanData, sn

KEY_COLUMNS = ["rule_type", "rule_id", "mdtrt_id", "bkkp_sn", "note"]

#: the derived tables a finish step reads and may change in place: name -> text-column frame
#: (``fee_list_d`` is not among them: it is written a chunk at a time, see
#: :class:`~medaudit.sample.generate.FeeLines`; a finish step reads ``ctx.fee_lines``)
Tables = dict[str, pl.DataFrame]


@dataclass
class Injector:
    """One violation type's injector. ``inject(ctx)`` adds violations and writes the key."""

    type: str  # the rule type it injects (module name = type name)
    inject: Callable[["Context"], None]
    rate: float = 0.02  # share of visits to break
    #: after the derived tables exist: with the :class:`Context` of a batch in one piece, or once at
    #: the end of a batch made in parts with a :class:`Batch` (a step without gather and combine)
    finish: Callable[[Context | Batch, Tables], None] | None = None
    #: a batch made in parts (:class:`medaudit.sample.generate.Part`): inject into the first part
    #: only (a violation judged against batch-wide counts, injected once: peer_outlier)
    once: bool = False
    #: a batch made in parts, for a finish step that reads the lines: ``gather(ctx, tables)``
    #: runs in each part once its tables exist and returns what the step needs of that part
    #: (small: aggregates, a few columns); ``combine(batch, gathered, tables)`` then runs once
    #: with the list of them (a :class:`Batch` for the context; ``tables`` the batch-wide
    #: ``hilist`` and ``purchases``). ``finish`` should be ``combine`` over one part's gather, so a
    #: batch in one piece gets the same result. A finish step without them runs once with a
    #: :class:`Batch` and must not read lines.
    gather: Callable[[Context, Tables], Any] | None = None  # Any: the injector's own, for its combine
    combine: Callable[[Context | Batch, list, Tables], None] | None = None

    def __post_init__(self) -> None:
        if (self.gather is None) != (self.combine is None):
            raise ValueError(f"injector {self.type}: gather and combine go together")


@dataclass
class Context:
    data: CleanData
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    key: list[dict] = field(default_factory=list)
    new_lines: list[dict] = field(default_factory=list)
    line_edits: dict[str, dict] = field(default_factory=dict)
    visit_edits: dict[str, dict] = field(default_factory=dict)
    rows: dict[str, list[dict]] = field(default_factory=dict)
    new_visits: list[dict] = field(default_factory=list)
    current_type: str = ""
    current_rate: float = 0.02
    #: set before the finish steps run: every fee line of the batch in fee_list_d's order (the
    #: internal columns of clean.LINE_SCHEMA, plus ``amt`` and ``own``: its amount and fully
    #: self-paid amount in fen), and every visit, the ones injectors added included
    fee_lines: pl.DataFrame | None = None
    all_visits: pl.DataFrame | None = None
    #: set by generate.assemble: quantity billed of each drug and consumable (fixmedins_code,
    #: code, period, q), what ``purchases`` is derived from
    billed: pl.DataFrame | None = None

    def __post_init__(self) -> None:
        self.visits = self.data.visits
        self._used = np.zeros(self.visits.height, dtype=bool)
        lines = self.data.lines
        vi = lines["vi"].to_numpy()
        self._starts = np.searchsorted(vi, np.arange(self.visits.height + 1))
        self._lines: pl.DataFrame | None = lines  # None once generate.assemble has taken them
        self._next = self.data.next_sn
        self._by_id = {m: i for i, m in enumerate(self.visits["mdtrt_id"].to_list())}
        self._pools: dict[tuple, np.ndarray] = {}  # (where, plain) -> matching visits, see _pool
        # the visits of the latest take_visits and, once one of them is read, their lines as
        # column lists (see _batch_rows): one gather for all of them instead of a frame per visit
        self._batch: np.ndarray | None = None
        self._batch_cols: dict[str, list] | None = None
        self._batch_at: np.ndarray | None = None

    # ------------------------------------------------------------------ reading
    @property
    def n_visits(self) -> int:
        return self.visits.height

    @property
    def part_tag(self) -> str:
        """Text that makes an id an injector invents unique in a batch made in parts (see
        generate.Part): empty for the first part (and a batch in one piece), else ``X<k>``."""
        return f"X{self.data.part}" if self.data.part else ""

    def count(self, rate: float | None = None) -> int:
        """How many visits to break at ``rate`` (default: the injector's rate), at least 1."""
        return max(1, int(round((self.current_rate if rate is None else rate) * self.n_visits)))

    def lines_of(self, visit: dict | str) -> pl.DataFrame:
        """The clean lines of one visit (internal columns: bkkp_sn, code, cnt, time, ...)."""
        vi = visit["vi"] if isinstance(visit, dict) else self._by_id[visit]
        if self._lines is None:
            raise RuntimeError("lines_of is for inject(); a finish step reads ctx.fee_lines")
        if vi >= self.n_visits:  # a visit an injector added: the lines added to it so far
            return pl.DataFrame([r for r in self.new_lines if r["vi"] == vi], schema=LINE_SCHEMA)
        return self._lines.slice(int(self._starts[vi]), int(self._starts[vi + 1] - self._starts[vi]))

    def rows_of(self, visit: dict | str, where: Callable[[LineRow], bool] | None = None) -> list[dict]:
        """The visit's lines as in :meth:`lines_of`, as dicts in the same order, those for which
        ``where(row)`` is true. For choosing a line of one visit: a polars filter per visit
        costs about 0.2 ms, and the injectors do it for hundreds of thousands of visits at 10M
        lines."""
        vi = visit["vi"] if isinstance(visit, dict) else self._by_id[visit]
        found = self._batch_rows(vi)
        if found is None:
            rows = self.lines_of(visit).to_dicts()
            return rows if where is None else [r for r in rows if where(r)]
        cols, lo, hi = found
        names = list(cols)
        values = list(cols.values())
        out = []
        for i in range(lo, hi):
            if where is None or where(_Row(cols, i)):
                out.append(dict(zip(names, [c[i] for c in values])))
        return out

    def _batch_rows(self, vi: int) -> tuple[dict[str, list], int, int] | None:
        """The lines of visit ``vi`` as (column lists, first, end) when it is one of the visits the
        latest :meth:`take_visits` picked (their lines are gathered once, on the first read);
        None otherwise."""
        b = self._batch
        if b is None or self._lines is None:
            return None
        k = int(np.searchsorted(b, vi))
        if k >= len(b) or b[k] != vi:
            return None
        cols, at = self._batch_cols, self._batch_at
        if cols is None or at is None:
            lo, hi = self._starts[b], self._starts[b + 1]
            counts = hi - lo
            at = np.zeros(len(b) + 1, dtype=np.int64)
            np.cumsum(counts, out=at[1:])
            if len(b) == 1:  # one visit (high_frequency_purchase picks one at a time): a slice, no gather
                f = self._lines.slice(int(lo[0]), int(counts[0]))
            else:
                f = self._lines[np.repeat(lo - at[:-1], counts) + np.arange(int(at[-1]))]
            cols = {}
            for c in f.columns:
                col = f[c]
                # numpy makes the datetimes (the same values) ten times faster than polars' to_list
                cols[c] = (
                    col.to_numpy().tolist()
                    if col.dtype == pl.Datetime("us") and not col.null_count()
                    else col.to_list()
                )
            self._batch_cols, self._batch_at = cols, at
        return cols, int(at[k]), int(at[k + 1])

    def item(self, code: str) -> cat.Item:
        return cat.BY_CODE[code]

    def price(self, code: str, visit: dict) -> int:
        """The clean unit price (fen) of an item at the visit's institution."""
        return cat.BY_CODE[code].price_at(int(visit["level"]))

    # ------------------------------------------------------------------ choosing visits
    def take_visits(self, n: int, where: pl.Expr | None = None, plain: bool = True) -> list[dict]:
        """Pick up to ``n`` visits matching ``where`` that no other injector has used, and mark
        them used. By default only plain visits (settled, not refunded, no refund or self-paid
        line), so every line of the visit is screened at its full amount."""
        pool = self._pool(where, plain)
        pool = pool[~self._used[pool]]
        self._pools[self._pool_key(where, plain)] = pool  # what is used now never comes back
        if not len(pool):
            return []
        chosen = np.sort(self.rng.choice(pool, size=min(n, len(pool)), replace=False))
        self._used[chosen] = True
        self._batch, self._batch_cols, self._batch_at = chosen, None, None
        if len(chosen) <= 8:  # one visit at a time (high_frequency_purchase): no frame per pick
            return [self.visits.row(int(i), named=True) for i in chosen]
        return self.visits[chosen.tolist()].to_dicts()

    def _pool_key(self, where: pl.Expr | None, plain: bool) -> tuple:
        if where is None:
            return (None, plain)
        # serialized once per expression object (an injector picking one visit at a time asks
        # thousands of times); the expression is kept so its id is not reused
        memo = self.__dict__.setdefault("_key_memo", {})
        hit = memo.get(id(where))
        if hit is None or hit[0] is not where:
            hit = memo[id(where)] = (where, where.meta.serialize(format="binary"))
        return (hit[1], plain)

    def _pool(self, where: pl.Expr | None, plain: bool) -> np.ndarray:
        """The visits matching ``where`` (and plain), as sorted row indices; evaluated once per
        expression (an injector that picks one visit at a time would otherwise scan every visit
        per pick), later narrowed to the unused ones by :meth:`take_visits`."""
        key = self._pool_key(where, plain)
        pool = self._pools.get(key)
        if pool is None:
            mask = (
                np.ones(self.n_visits, dtype=bool)
                if where is None
                else self.visits.select(where.fill_null(False)).to_series().to_numpy()
            )
            if plain:
                mask &= self.visits["plain"].to_numpy()
            pool = self._pools[key] = np.flatnonzero(mask)
        return pool

    def use_visit(self, visit: dict | str) -> None:
        """Mark a visit used without picking it (e.g. another visit of a person you touched)."""
        vi = visit["vi"] if isinstance(visit, dict) else self._by_id[visit]
        self._used[vi] = True

    def used(self, visit: dict | str) -> bool:
        vi = visit["vi"] if isinstance(visit, dict) else self._by_id[visit]
        return bool(self._used[vi])

    # ------------------------------------------------------------------ changing the data
    def add_visit(
        self, like: dict, begntime: dt.datetime, endtime: dt.datetime, inst: str | None = None, **changes: Any
    ) -> dict:
        """A new settled visit of ``like``'s person, a copy of ``like``'s row (med_type, diagnoses,
        department, doctor...) from ``begntime`` to ``endtime``, at institution ``inst`` (default:
        the same; its name and level follow), with ``changes`` to other internal columns. It has
        no lines: add them with :meth:`add_line`. Its diagnoses are ``main_diag`` and
        ``second_diag``. It is never picked by :meth:`take_visits` (it counts as used)."""
        vi = self.n_visits + len(self.new_visits)
        row = dict(like)
        row.update(
            vi=vi,
            mdtrt_id=f"MD2026{self.data.visit_base + vi + 1:08d}",
            setl_id=f"S2026{self.data.visit_base + vi + 1:08d}",
            begntime=begntime,
            endtime=endtime,
            settled=True,
            refunded=False,
            open=False,
            died=False,
            plain=True,
            last_of_person=False,
        )
        if inst is not None:
            code, name, hosp_lv = next(x for x in cat.INSTITUTIONS if x[0] == inst)
            row.update(
                fixmedins_code=code,
                fixmedins_name=name,
                hosp_lv=hosp_lv,
                level={"01": 3, "03": 3, "05": 2, "06": 2, "13": 2}.get(hosp_lv, 1),
            )
        row.update(changes)
        los = (row["endtime"].date() - row["begntime"].date()).days
        row.update(
            los_dd=los,
            bed_days=max(los, 1) if row["inpatient"] else 0,
            ipt_days=max(los, 1) if row["inpatient"] else None,
            age_days=(row["begntime"].date() - row["brdy"]).days,
        )
        self.new_visits.append(row)
        self._by_id[row["mdtrt_id"]] = vi
        if vi >= len(self._used):  # room for added visits, doubled when full (np.append per visit is quadratic)
            self._used = np.concatenate([self._used, np.zeros(max(len(self._used), 1024), dtype=bool)])
        self._used[vi] = True
        return row

    def add_line(self, visit: dict, code: str, time: dt.datetime, cnt: int = 1, **kw: Any) -> str:
        """Add a fee line to a visit; returns its bkkp_sn. ``kw`` may set ``pric`` (fen),
        ``ownpay_pct``, ``appr``, ``dscg``, ``prd_days``, ``init``, ``billed`` (see clean.LINE_SCHEMA)."""
        if code not in cat.BY_CODE:
            raise KeyError(f"{code} is not in medaudit.sample.catalog.ITEMS")
        bad = set(kw) - set(LINE_SCHEMA)
        if bad:
            raise TypeError(f"unknown line fields {sorted(bad)}")
        bkkp_sn = sn(self._next)
        self._next += 1
        row = {
            "vi": visit["vi"],
            "bkkp_sn": bkkp_sn,
            "code": code,
            "cnt": cnt,
            "time": time,
            "pric": None,
            "ownpay_pct": 0,
            "appr": "1",
            "dscg": None,
            "prd_days": None,
            "init": None,
            "billed": None,
        }
        row.update(kw)
        self.new_lines.append(row)
        return bkkp_sn

    def edit_line(self, bkkp_sn: str, **changes: Any) -> None:
        """Change fields of a clean line (same names as add_line's keywords, plus cnt, time, code)."""
        self.line_edits.setdefault(bkkp_sn, {}).update(changes)

    def edit_visit(self, mdtrt_id: str, **changes: Any) -> None:
        """Change mdtrt_d fields of a visit (national names: dscg_way, die_date, ipt_days, ...)."""
        self.visit_edits.setdefault(mdtrt_id, {}).update(changes)

    def add_row(self, table: str, **row: Any) -> None:
        """Add a row to another table of the batch: psn_death, setl_list_diag_d, setl_list_oprn_d,
        purchases, hilist (national column names)."""
        self.rows.setdefault(table, []).append(row)

    def expect(
        self, rule_id: str, visit: dict | str | None, bkkp_sn: str | None, note: str = "", rule_type: str | None = None
    ) -> None:
        """Write one answer-key row: this rule must flag this line (bkkp_sn None: the visit as a
        whole; visit None too: a finding about an institution or a department, not a visit)."""
        _expect(self, rule_id, visit, bkkp_sn, note, rule_type)

    # ------------------------------------------------------------------ time helpers
    @staticmethod
    def day_of(visit: dict, offset: int) -> dt.date:
        return visit["begntime"].date() + dt.timedelta(days=offset)

    @staticmethod
    def at(day: dt.date, hh: int, mm: int = 0, ss: int = 0) -> dt.datetime:
        return dt.datetime.combine(day, dt.time(hh, mm, ss))

    def time_in(self, visit: dict) -> dt.datetime:
        """A time inside an outpatient visit (between its start and end), or on day 1 of a stay."""
        b, e = visit["begntime"], visit["endtime"] or visit["begntime"] + dt.timedelta(hours=3)
        if visit["inpatient"] and visit["bed_days"] >= 2:
            return self.at(self.day_of(visit, 1), 9, int(self.rng.integers(0, 60)), int(self.rng.integers(0, 60)))
        span = max(int((e - b).total_seconds()) - 60, 1)
        return b + dt.timedelta(seconds=int(self.rng.integers(1, span)))


def _expect(ctx, rule_id: str, visit: dict | str | None, bkkp_sn: str | None, note: str, rule_type: str | None) -> None:
    mdtrt_id = visit["mdtrt_id"] if isinstance(visit, dict) else visit
    ctx.key.append(
        {
            "rule_type": rule_type or ctx.current_type,
            "rule_id": rule_id,
            "mdtrt_id": mdtrt_id,
            "bkkp_sn": bkkp_sn,
            "note": note,
        }
    )


@dataclass
class Batch:
    """The context of a batch-wide finish step of a batch made in parts, once every part is made
    (see :attr:`Injector.combine`): ``count``, ``rng``, ``expect`` as in :class:`Context`, over
    the clean visits of all parts; the parts' lines are gone (gathered by ``Injector.gather``)."""

    n_visits: int
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))
    key: list[dict] = field(default_factory=list)
    current_type: str = ""
    current_rate: float = 0.02

    def count(self, rate: float | None = None) -> int:
        return max(1, int(round((self.current_rate if rate is None else rate) * self.n_visits)))

    def expect(
        self, rule_id: str, visit: dict | str | None, bkkp_sn: str | None, note: str = "", rule_type: str | None = None
    ) -> None:
        _expect(self, rule_id, visit, bkkp_sn, note, rule_type)

    def use_visit(self, visit: dict | str) -> None:
        """Nothing to mark: every part has run its injectors and finish steps."""

    @property
    def fee_lines(self):
        raise RuntimeError("a batch made in parts has no fee_lines at the end: give the injector gather and combine")


class LineRow(Protocol):
    """What a :meth:`Context.rows_of` condition reads of a line: its fields by key (a dict, or a
    :class:`_Row`)."""

    def __getitem__(self, key: str, /) -> Any: ...


class _Row:
    """Line ``i`` of column lists, read by key: what a ``rows_of`` condition sees (a dict is
    made only for the lines it keeps)."""

    __slots__ = ("_cols", "_i")

    def __init__(self, cols: dict[str, list], i: int):
        self._cols, self._i = cols, i

    def __getitem__(self, key: str) -> Any:
        return self._cols[key][self._i]

    def get(self, key: str, default: Any = None) -> Any:
        col = self._cols.get(key)
        return default if col is None else col[self._i]

    def __contains__(self, key: str) -> bool:
        return key in self._cols


def seed_for(seed: int, name: str) -> int:
    """A stable per-injector seed, so one injector's picks do not depend on another's draws."""
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (1 << 63)
