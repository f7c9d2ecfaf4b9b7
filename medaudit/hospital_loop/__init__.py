"""The hospital loop: what happens to findings after screening.

- :mod:`.lifecycle` — the states of a finding (open, under review, appealed, confirmed,
  withdrawn, final) and the one table of allowed moves, with who/when/why for each;
- :mod:`.appeals` — the hospital's appeal workbook: export of its queue, import of its answers;
- :mod:`.deduct` — final deductions per institution and period (扣款单), never a line twice;
- :mod:`.report` — the deduction report (扣款依据报表) with evidence a clerk can check by hand.

The command line (``medaudit review/appeal/deduct/report``) and the web portal
(:mod:`medaudit.web`) both go through these modules, so a move means the same in either.
docs/hospital-loop.md walks through the loop.
"""
