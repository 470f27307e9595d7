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
_SURROGATES = range(0xD800, 0xE000)


def _unsafe(char):
    return unicodedata.category(char) in UNSAFE_CATEGORIES or char in BANNED


def _ranges(codes):
    """Runs (first, last) of consecutive code points."""
    runs = []
    for code in codes:
        if runs and runs[-1][1] == code - 1:
            runs[-1][1] = code
        else:
            runs.append([code, code])
    return runs


def _char(code):
    # The dialects OpenAPI tools read a pattern in (ECMA 262 and the Rust engine of JSON Schema validators, Python's
    # re for generators) share \uXXXX for the BMP only: above it ECMA and Rust write \u{...}, Python \U........, so
    # those code points stand as themselves (JSON carries them). A surrogate has no spelling in ECMA's Unicode mode
    # or in Rust (it is not a character), so the pattern cannot name one: the server alone refuses it (Cs).
    if code > 0xFFFF:
        return chr(code)
    return f"\\u{code:04x}"


def _class(codes, negate=True):
    """A character class of every character but `codes` (or of `codes`), surrogates left out: see _char."""
    runs = _ranges(code for code in sorted(codes) if code not in _SURROGATES)
    return ("[^" if negate else "[") + "".join(_char(a) if a == b else f"{_char(a)}-{_char(b)}" for a, b in runs) + "]"


_UNSAFE_CODES = frozenset(code for code in range(sys.maxunicode + 1) if _unsafe(chr(code)))
# Private use (Co): 137,468 code points, most of the unsafe ones. A generator draws a class by listing its members
# (Hypothesis' from_regex: about 0.25 s per class of them, again for each mutated schema), so they are refused by one
# lookahead, which a generator skips and then checks, and the classes below stay small.
_PRIVATE_CODES = frozenset(code for code in _UNSAFE_CODES if unicodedata.category(chr(code)) == "Co")
_OTHER_UNSAFE = _UNSAFE_CODES - _PRIVATE_CODES
# White space a name may hold inside but not at either end (what str.strip takes off), the unsafe kinds aside.
_SPACE_CODES = frozenset(code for code in range(sys.maxunicode + 1) if chr(code).isspace()) - _UNSAFE_CODES
_INNER = _class(_OTHER_UNSAFE)
_END = _class(_OTHER_UNSAFE | _SPACE_CODES)
_END_NOT_DOT = _class(_OTHER_UNSAFE | _SPACE_CODES | {ord(".")})
# The rule as one regular expression with no escape or class that the dialects read differently (no \s, no \U, no
# $ before a newline that matters: every newline is refused), so a validator and a generator of any of the dialects
# above agree with the server: no private use character anywhere; then one character but ., two but .., or more with
# no white space at either end. What it cannot say (a name that reads as a UUID) is NOT_PATTERN; the length is
# maxLength's.
_NO_PRIVATE = rf"(?!.*{_class(_PRIVATE_CODES, negate=False)})"
PATTERN = rf"^{_NO_PRIVATE}(?:{_END_NOT_DOT}{_END}?|\.{_END_NOT_DOT}|{_END}{_INNER}+{_END})$"
NOT_PATTERN = rf"^{UUID}$"
DESCRIPTION = (
    f"1-{MAX_LENGTH} characters; none of {' '.join(BANNED)}; no control or invisible characters (Unicode Cc, Cf, Cs, "
    "Co, Zl, Zp); no white space at either end; not . or ..; not a UUID (a path segment that parses as one is read "
    "as an id)."
)
_uuid = re.compile(UUID + r"\Z")


def json_schema():
    """The rule as an OpenAPI (JSON Schema) string schema."""
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_LENGTH,
        "pattern": PATTERN,
        "not": {"pattern": NOT_PATTERN},
        "description": DESCRIPTION,
    }


def is_uuid(value):
    return _uuid.match(value) is not None


def problem(value):
    """Why a name is refused, in one line; None when it is a good name (the rule PATTERN says)."""
    banned = sorted({c for c in value if c in BANNED})
    if banned:
        return f"Name must not contain any of / % & > < (found {' '.join(banned)})."
    if value.strip() != value or not value:
        return "Name must not be blank or start or end with white space."
    unsafe = sorted({f"U+{ord(c):04X}" for c in value if ord(c) in _UNSAFE_CODES})
    if unsafe:
        return f"Name must not contain control or invisible characters (found {' '.join(unsafe)})."
    if value in (".", ".."):
        return "Name must not be . or .. (HTTP clients rewrite them out of a URL)."
    if is_uuid(value):
        return "Name must not be a UUID: a path segment that parses as one is read as a limit's id."
    return None
