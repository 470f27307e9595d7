"""What a limit's name may be, declared once: the schemas, the OpenAPI document and the id-or-name lookup read it."""

import re
import sys
import unicodedata

MAX_LENGTH = 255
BANNED = "/%&><"
# Control, format (bidirectional overrides, zero-width), surrogate, private-use and line/paragraph separator code
# points: invisible or misleading in a list, a log line or a terminal.
UNSAFE_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Co", "Zl", "Zp"))
# A UUID as an id is written (hyphens optional, braces and the urn prefix allowed): ids and names share the path.
UUID = r"(?:urn:uuid:)?\{?[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}\}?"


def _escape(code):
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _unsafe_class():
    """A regex character class of every unsafe code point and banned character, as ranges of this Python's Unicode."""
    ranges, start, previous = [], None, None
    for code in range(sys.maxunicode + 1):
        if unicodedata.category(chr(code)) in UNSAFE_CATEGORIES or chr(code) in BANNED:
            if start is None:
                start = code
            previous = code
        elif start is not None:
            ranges.append((start, previous))
            start = None
    if start is not None:
        ranges.append((start, previous))
    return "".join(_escape(a) if a == b else f"{_escape(a)}-{_escape(b)}" for a, b in ranges)


_RANGES = _unsafe_class()
UNSAFE = f"[{_RANGES}]"
# The whole rule as one regular expression (Python's, which is also what OpenAPI tools that generate from the
# document use): printable, no white space at either end, not . or .., not a UUID; the length is maxLength's.
PATTERN = rf"^(?!\s)(?!.*\s$)(?!\.\.?$)(?!{UUID}$)[^{_RANGES}]+$"
DESCRIPTION = (
    f"1-{MAX_LENGTH} characters; none of {' '.join(BANNED)}; no control or invisible characters (Unicode Cc, Cf, Cs, "
    "Co, Zl, Zp); no white space at either end; not . or ..; not a UUID (a path segment that parses as one is read "
    "as an id)."
)
_uuid = re.compile(UUID + r"\Z")
_unsafe = re.compile(UNSAFE)


def is_uuid(value):
    return _uuid.match(value) is not None


def problem(value):
    """Why a name is refused, in one line; None when it is a good name (the rule PATTERN says)."""
    banned = sorted({c for c in value if c in BANNED})
    if banned:
        return f"Name must not contain any of / % & > < (found {' '.join(banned)})."
    if value.strip() != value or not value:
        return "Name must not be blank or start or end with white space."
    unsafe = sorted({f"U+{ord(c):04X}" for c in _unsafe.findall(value)})
    if unsafe:
        return f"Name must not contain control or invisible characters (found {' '.join(unsafe)})."
    if value in (".", ".."):
        return "Name must not be . or .. (HTTP clients rewrite them out of a URL)."
    if is_uuid(value):
        return "Name must not be a UUID: a path segment that parses as one is read as a limit's id."
    return None
