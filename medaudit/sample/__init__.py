"""Sample batches with injected violations and an answer key (``medaudit sample generate``).

A sample batch is a folder in the data contract's format (``mdtrt_d``, ``setl_d``,
``fee_list_d``, ``setl_list_diag_d``, ``setl_list_oprn_d``, ``psn_death``, ``hilist``,
``purchases``; CSV or Parquet) plus ``answer_key.csv``: one row per violating line that the
sample rule library (``rules/``) must flag, with columns ``rule_type, rule_id, mdtrt_id,
bkkp_sn, note``. It is built in three steps:

1. :mod:`medaudit.sample.clean` draws realistic visits and fee lines (vectorised with numpy;
   a million lines in seconds) that break no rule of the sample library: see its docstring
   for what the clean data promises. Deterministic for a seed.
2. Each **injector** (:mod:`medaudit.sample.injectors`, one module per rule type) breaks a
   share of visits (``rate``, default 2%) in its own way and writes the answer key.
3. :mod:`medaudit.sample.generate` applies the changes and derives the settlement totals, the
   catalogue (``hilist``, caps = the clean prices) and the purchases (120% of what was billed,
   plus 10) from the final lines.

:mod:`medaudit.sample.check` compares a screening run's findings with the key
(``tests/test_end_to_end.py`` requires recall and precision 1.0).

Writing an injector
-------------------
Add ``medaudit/sample/injectors/<rule_type>.py`` (the module name is the rule type's name; an
injector for a type the engine does not know is skipped) defining::

    from ..inject import Context, Injector

    def inject(ctx: Context) -> None:
        for v in ctx.take_visits(ctx.count(), pl.col("inpatient") & (pl.col("bed_days") >= 3)):
            sn = ctx.add_line(v, catalog.BED, ctx.at(ctx.day_of(v, 1), 9, 30))
            ctx.expect("R-XXX-001", v, sn, "why this line is a violation")

    INJECTOR = Injector("<rule_type>", inject, rate=0.02)   # optional finish=(ctx, tables)

What the :class:`~medaudit.sample.inject.Context` gives:

- ``ctx.visits``: one row per visit (polars): ``vi`` (row index), ``mdtrt_id``, ``psn_no``,
  ``gend``, ``brdy``, ``age_days`` (at the visit start), ``insutype``, ``fixmedins_code``,
  ``hosp_lv``, ``level`` (0-3), ``med_type``, ``inpatient``, ``begntime``, ``endtime``
  (None for open stays), ``los_dd`` (date(end) - date(begin)), ``bed_days`` (days billed a bed:
  max(los_dd, 1) for inpatients), ``ipt_days``, ``main_diag``, ``second_diag``, ``dept``,
  ``doctor``, ``setl_id``, ``settled``, ``refunded`` (settlement refunded), ``open``, ``died``,
  ``last_of_person``, ``person_visits``, ``plain``.
- ``ctx.take_visits(n, where)`` picks up to n unused visits matching a polars expression and
  marks them used, so **each visit carries at most one injected violation** (key rows stay
  unambiguous). By default only *plain* visits: settled, not refunded, no refund or self-paid
  line, so every line of the visit is screened at its full amount. ``ctx.use_visit(v)``
  reserves a visit you touch without picking it (e.g. another stay of the same person).
- ``ctx.lines_of(v)`` the visit's clean lines (``bkkp_sn, code, cnt, time, pric, ownpay_pct,
  appr, dscg, prd_days, init, billed``; ``pric`` None = catalogue price at the visit's level, in
  fen; ``billed`` None = the line amount is ``cnt`` x ``pric``, else the amount in fen as billed);
  ``ctx.data.lines`` all of them. ``ctx.rows_of(v, where)``: the same lines as dicts, those for
  which ``where(row)`` holds (per visit, cheaper than a polars filter: injectors pick lines of
  hundreds of thousands of visits at 10M lines; the lines of the visits the latest
  ``take_visits`` picked are gathered once, and ``where`` reads a row by key before a dict is
  made for it, so keep ``where`` to ``row[...]`` reads). Both are for ``inject`` only.
- ``ctx.add_line(v, code, time, cnt=1, **fields)`` adds a line (code must be in
  :data:`medaudit.sample.catalog.ITEMS`; add items there) and returns its ``bkkp_sn``;
  ``ctx.edit_line(bkkp_sn, **fields)``, ``ctx.edit_visit(mdtrt_id, **national_fields)``,
  ``ctx.add_row(table, **row)`` for ``psn_death``, ``setl_list_diag_d``, ``setl_list_oprn_d``,
  ``purchases``, ``hilist``.
- ``ctx.add_visit(like, begntime, endtime, inst=None, **fields)`` adds a settled visit of
  ``like``'s person (a copy of its row: med_type, diagnoses, department...; ``inst`` moves it
  to another institution of :data:`medaudit.sample.catalog.INSTITUTIONS`) with no lines yet:
  for violations that need a second stay or more visits of one person (readmission,
  overlapping stays, frequent purchases). Give it lines with ``ctx.add_line``.
- ``ctx.expect(rule_id, v, bkkp_sn, note)`` writes a key row for the injector's type. Give
  every line the rule must flag as violating; ``bkkp_sn=None`` when the finding is about the
  visit as a whole (visit-level types: then only the visit is compared; ``v=None`` for a finding about an
  institution, not a visit, e.g. ``inventory_mismatch``). If an injected line
  also breaks a rule of another type, expect it there too (``rule_type=``).
- ``ctx.rng`` (numpy Generator seeded from the batch seed and the type name), ``ctx.count()``
  (visits to break at the injector's rate, at least 1), ``ctx.time_in(v)``, ``ctx.day_of(v, k)``,
  ``ctx.at(day, hh, mm)``, ``ctx.price(code, v)``.
- ``finish(ctx, tables)`` runs after the derived tables exist (``tables`` maps a table name to
  its text-column polars frame; change them in place, e.g. lower a purchase for
  ``inventory_mismatch``). ``fee_list_d`` is not among them: it is written a chunk of lines at a
  time and never held whole as text (:class:`~medaudit.sample.generate.FeeLines`), on threads
  of its own that start before the finish steps (so a finish step never changes it); read the
  lines from ``ctx.fee_lines`` (every line in fee_list_d's order, typed internal columns plus
  ``amt`` and ``own`` in fen) and the visits from ``ctx.all_visits``.

Scale: at 10M lines the generator holds one typed copy of the lines (about 70 bytes a line)
and the visits; keep per-line work vectorised (polars/numpy over all lines) and per-visit work
to the visits an injector breaks.

Batches in parts: ``generate(..., part_lines=N)`` (``--part-lines``) makes a larger batch as
parts of about N lines, each generated like a batch of its own (its own seed, ids after the
previous part's) and appended to the batch's files as soon as it is made, so memory is bounded
by a part (see :func:`medaudit.sample.generate.parts`). A person's visits never span parts, so an
injector that works within a person, a visit or a stay needs nothing more. One that judges
against the whole batch says so: ``Injector(once=True)`` injects in the first part only
(peer_outlier: one outlying department); a ``finish`` step that reads the lines also gives
``gather(ctx, tables)`` (what it needs of one part, small) and ``combine(batch, gathered,
tables)`` (decides over all parts; ``finish`` is ``combine`` over one gather, so a batch in one
piece is unchanged): inventory_mismatch, overtreatment. Other finish steps run once at the end
with a :class:`~medaudit.sample.inject.Batch` and the batch-wide ``hilist`` and ``purchases``.

Rules for injectors: add the rules your injector targets to ``rules/`` (one YAML per type);
keep the clean data clean (if your new rule would flag clean lines, change the clean generator
so it does not, and say why in its docstring); make the injected line break exactly the rules
the key lists; use ``ctx.rng`` only, so a seed gives the same batch.
"""

from .generate import Generated, build, generate

__all__ = ["generate", "build", "Generated"]
