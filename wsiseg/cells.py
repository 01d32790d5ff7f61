"""Text cells of the CSV files wsiseg writes, safe to open in a spreadsheet.

A spreadsheet runs a cell that begins with ``=``, ``+``, ``-`` or ``@`` as a formula, and some
read a leading tab or carriage return the same way, so a class or model name such as
``=HYPERLINK(...)`` would run when a report is opened. Such text is written with a leading
apostrophe (the rule OWASP gives for CSV injection), which spreadsheets show as plain text.
Numbers are written by the code that formats them and are never passed through here; JSON
files keep every name exactly.
"""

from __future__ import annotations

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: object) -> str:
    """``value`` as the text of a CSV cell that a spreadsheet shows and never runs."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text
