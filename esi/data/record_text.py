"""Text that comes with a record (statements, Dx codes, labels CSV cells, reports) is data: never markup, never
an instruction. `clean_record_text` is its one normal form before anything quotes, renders or prompts with it:
NFKC (full-width and compatibility look-alikes become plain characters), no control, format, bidirectional or
zero-width characters (an ANSI escape sequence goes whole), runs of white space as one space, and a bounded length.
"""

from __future__ import annotations

import re
import unicodedata

# One statement or code is a phrase; a free-text report a paragraph or two. Longer text is cut and marked.
MAX_STATEMENT_CHARS = 300
MAX_REPORT_CHARS = 2000
TRUNCATION_MARK = " [cut]"
_ANSI_ESCAPE_RE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])")
# Unicode categories dropped: control (Cc), format (Cf: bidi overrides, zero-width, soft hyphen, BOM),
# unassigned (Cn), private use (Co), surrogates (Cs).
_DROPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cn", "Co", "Cs"})


def without_invisible(text: object) -> str:
    """`text` in NFKC without ANSI escape sequences and control, format, bidirectional or zero-width characters;
    line breaks and tabs stay (a generated caption keeps its paragraphs)."""
    value = unicodedata.normalize("NFKC", _ANSI_ESCAPE_RE.sub("", str(text)))
    return "".join(ch for ch in value if unicodedata.category(ch) not in _DROPPED_CATEGORIES or ch in "\t\n\r")


def clean_record_text(text: object, max_chars: int = MAX_STATEMENT_CHARS) -> str:
    """`text` in its normal form (see the module docstring), at most `max_chars` characters plus a cut mark."""
    value = " ".join(without_invisible(text).split())
    if len(value) > max_chars:
        value = value[:max_chars].rstrip() + TRUNCATION_MARK
    return value
