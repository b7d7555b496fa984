"""Text from Matrix in a form Postgres and UTF-8 accept.

An encrypted event can carry anything its sender's client chose: U+0000 (Postgres refuses it
in text and jsonb) or lone surrogates such as "\\ud800" (valid JSON, but not encodable as
UTF-8). Both become U+FFFD before they are stored, so one event can never make a batch
unstorable; everything else is kept as it is.
"""

from __future__ import annotations

import re
from typing import Any

REPLACEMENT = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable_text(text: str) -> str:
    """`text` with U+0000 and lone surrogates replaced by U+FFFD."""
    return _UNSTORABLE.sub(REPLACEMENT, text)


def storable_json(value: Any) -> Any:
    """A JSON value with every string (keys included) made storable."""
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, dict):
        return {storable_text(str(k)): storable_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable_json(v) for v in value]
    return value
