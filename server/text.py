"""Cleaning of human-entered names and titles (unit names, display names, titles, group names).

Names are NFC-normalised, trimmed, inner spaces collapsed, and refused when they hold characters
that have no place in a name: control characters (tab and line breaks included), format characters
(which include the bidirectional overrides used to disguise text, and zero-width characters),
private-use and unassigned code points.
The zero-width joiner stays allowed (it glues emoji sequences). The middle dot of minority names
(买买提·艾力) is ordinary punctuation and passes.
"""

from __future__ import annotations

import re
import unicodedata

from .errors import XtError

# Runs of white space to collapse — but not the control characters Python also counts as white space
# (tab, line breaks, U+001C–U+001F, U+0085): those are refused below, not quietly turned into spaces.
_SPACES = re.compile(r"[^\S\x00-\x1f\x7f-\x9f]+")
_ALLOWED_FORMAT = {"\u200d"}  # zero-width joiner
_REFUSED_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn"}


def clean_name(value: str, field: str, *, max_length: int = 64, allow_empty: bool = False) -> str:
    text = _SPACES.sub(" ", unicodedata.normalize("NFC", value)).strip(" ")
    if not text and not allow_empty:
        raise XtError("request.invalid", f"{field}: must not be empty")
    if len(text) > max_length:
        raise XtError("request.invalid", f"{field}: at most {max_length} characters")
    for char in text:
        if unicodedata.category(char) in _REFUSED_CATEGORIES and char not in _ALLOWED_FORMAT:
            raise XtError("request.invalid", f"{field}: contains a control or invisible character U+{ord(char):04X}")
    return text


_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,31}$")


def clean_username(value: str) -> str:
    """Login names: 2–32 of a-z 0-9 . _ -, starting with a letter or digit, stored in lower case."""
    text = value.strip().lower()
    if not _USERNAME.match(text):
        raise XtError("request.invalid", "username: 2-32 characters of a-z, 0-9, '.', '_', '-'")
    return text


_PHONE = re.compile(r"^\+?[0-9][0-9 -]{2,23}$")


def clean_phone(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    text = value.strip()
    if not _PHONE.match(text):
        raise XtError("request.invalid", "phone: digits, spaces and dashes, optionally starting with +")
    return text
