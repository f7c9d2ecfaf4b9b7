"""Every workbook medaudit writes: text is stored as text, never as a formula or a link.

Names, department codes, reasons and file names come from claim extracts and hospitals; a
value like ``=HYPERLINK("http://x","y")`` or ``=1+1`` written with xlsxwriter's default
``write()`` becomes a live formula in the bureau's or the hospital's Excel. The workbooks
are opened with ``strings_to_formulas``, ``strings_to_urls`` and ``strings_to_numbers`` off,
so ``write()`` of any ``str`` stores it as a string cell (DDE payloads such as
``+cmd|' /C calc'!A0`` or ``@SUM(A1)`` are plain strings as well: only a formula cell runs).

A workbook is written to a hidden temporary file next to ``path`` and renamed into place when it
is closed, so an interrupted write (a crash, ``kill -9``) never leaves a half-written workbook
under the name a clerk asked for.
"""

from __future__ import annotations

from pathlib import Path

#: options of every xlsxwriter workbook the project writes
SAFE_OPTIONS = {"strings_to_formulas": False, "strings_to_urls": False, "strings_to_numbers": False}


def workbook(path: Path):
    """A new xlsxwriter workbook for ``path`` that writes every string as a string and appears
    at ``path`` only whole (on ``close()``)."""
    import os

    import xlsxwriter

    class _AtomicWorkbook(xlsxwriter.Workbook):
        def close(self):
            try:
                super().close()
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, final)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)

    final = Path(path)
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    return _AtomicWorkbook(str(tmp), dict(SAFE_OPTIONS))


#: how a number column is shown (the cell holds the number itself, so Excel can sum it)
NUM_FORMATS = {"money": "#,##0.00", "int": "#,##0", "qty": "General", "price": "#,##0.00##"}


class Cells:
    """The cell formats of one workbook and one writer for every value, stored by its type:
    ``int`` and ``Decimal``/``float`` as number cells (counts, quantities, prices, amounts: Excel
    can sum them), everything else as a string cell (codes keep their leading zeros, ``None`` is
    an empty cell, dates are written ``YYYY-MM-DD``). ``kind`` picks how a number is shown
    (:data:`NUM_FORMATS`; default ``int`` for ``int``, ``money`` otherwise)."""

    def __init__(self, wb, **base):
        base = base or {"border": 1, "valign": "top"}
        self.text = wb.add_format({**base, "text_wrap": True})
        self.num = {k: wb.add_format({**base, "num_format": f}) for k, f in NUM_FORMATS.items()}

    def put(self, ws, row: int, col: int, value, kind: str | None = None, fmt=None) -> None:
        from decimal import Decimal

        if isinstance(value, bool):
            ws.write_string(row, col, "是" if value else "否", fmt or self.text)
        elif isinstance(value, (int, float, Decimal)):
            kind = kind or ("int" if isinstance(value, int) else "money")
            ws.write_number(row, col, float(value) if not isinstance(value, int) else value, fmt or self.num[kind])
        elif value is None or value == "":
            ws.write_blank(row, col, None, fmt or self.text)
        else:
            ws.write_string(row, col, value if isinstance(value, str) else _text(value), fmt or self.text)

    def row(self, ws, row: int, values, kinds: dict[int, str] | None = None, start: int = 0) -> None:
        for j, v in enumerate(values, start):
            self.put(ws, row, j, v, (kinds or {}).get(j))


def _text(value) -> str:
    import datetime as dt

    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)
