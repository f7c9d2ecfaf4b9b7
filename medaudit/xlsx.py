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
