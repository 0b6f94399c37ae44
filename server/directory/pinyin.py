"""Pinyin keys for searching names: 张伟 → ``zhangwei`` and ``zw``.

A Chinese name's first character is its surname, and several surnames are read differently from the
same character elsewhere (单 is "shan" as a surname, "dan" otherwise); :data:`SURNAMES` fixes those.
Other scripts pass through in lower case, so "Li Lei" → ``lilei`` / ``ll`` (full-width "Ｌｉ Ｌｅｉ" too).
"""

from __future__ import annotations

import re
import unicodedata

from pypinyin import Style, lazy_pinyin

# Polyphonic characters read differently as surnames (the common ones in civil-service rolls).
SURNAMES = {
    "单": "shan", "曾": "zeng", "解": "xie", "仇": "qiu", "区": "ou", "查": "zha", "朴": "piao",
    "盖": "ge", "乐": "yue", "覃": "qin", "翟": "zhai", "缪": "miao", "尉": "yu", "种": "chong",
    "繁": "po", "员": "yun", "召": "shao", "长": "chang", "藏": "zang", "冼": "xian", "柏": "bai",
    "秘": "bi", "句": "gou", "啜": "chuai", "叶": "ye", "沈": "shen", "石": "shi", "重": "chong",
}
_KEY_CHARS = re.compile(r"[^a-z0-9]")


def pinyin_keys(name: str) -> tuple[str, str]:
    """(full pinyin, initials) in lower case a–z/0–9 only."""
    # Compatibility forms (full-width Ｌｉ, ligatures) are folded first so that they are found by "li".
    name = unicodedata.normalize("NFKC", name)
    syllables = lazy_pinyin(name, style=Style.NORMAL, errors=lambda chars: chars.split())
    if name and name[0] in SURNAMES and syllables:
        syllables[0] = SURNAMES[name[0]]
    keys = [_KEY_CHARS.sub("", s.lower()) for s in syllables]
    keys = [k for k in keys if k]
    return "".join(keys), "".join(k[0] for k in keys)
