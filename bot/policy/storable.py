"""Text from Matrix in a form Postgres and UTF-8 accept.

An encrypted event can carry anything its sender's client chose: U+0000 (Postgres refuses it
in text and jsonb) or lone surrogates such as "\\ud800" (valid JSON, but not encodable as
UTF-8). Both are stored as their `\\u0000` / `\\ud800` escapes, so one event can never make a
batch unstorable, and the stored text still shows what was sent; everything else is kept as
it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def is_storable_text(text: str) -> bool:
    return _UNSTORABLE.search(text) is None


def storable_text(text: str) -> str:
    """`text` with U+0000 and surrogate code points written as `\\u0000` / `\\ud800` escapes."""
    return _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def storable(value: Any) -> Any:
    """`value` with every string in it (dict keys included) made storable; tuples as lists."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, Mapping):
        return {
            (storable_text(k) if isinstance(k, str) else k): storable(v) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value
