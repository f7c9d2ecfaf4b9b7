"""Every workbook medaudit writes: text is stored as text, never as a formula or a link.

Names, department codes, reasons and file names come from claim extracts and hospitals; a
value like ``=HYPERLINK("http://x","y")`` or ``=1+1`` written with xlsxwriter's default
``write()`` becomes a live formula in the bureau's or the hospital's Excel. The workbooks
are opened with ``strings_to_formulas``, ``strings_to_urls`` and ``strings_to_numbers`` off,
so ``write()`` of any ``str`` stores it as a string cell (DDE payloads such as
``+cmd|' /C calc'!A0`` or ``@SUM(A1)`` are plain strings as well: only a formula cell runs).
"""

from __future__ import annotations

from pathlib import Path

#: options of every xlsxwriter workbook the project writes
SAFE_OPTIONS = {"strings_to_formulas": False, "strings_to_urls": False, "strings_to_numbers": False}


def workbook(path: Path):
    """A new xlsxwriter workbook at ``path`` that writes every string as a string."""
    import xlsxwriter

    return xlsxwriter.Workbook(str(path), dict(SAFE_OPTIONS))
