"""What SAS shows and what it checks, apart from the state machine (bot.policy.sas): the
spec's emoji table, the short code of the SAS bytes, the start commitment, and the field-by-field
checks of untrusted contents (`Invalid` is the spec's m.invalid_message). Pure, no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_ID = 255  # user IDs, device IDs, transaction IDs, event IDs
MAX_KEY = 128  # unpadded base64 of a 32-byte key or MAC is 43 characters
MAX_LIST = 16

# (symbol, name): the spec's 64 emoji, indexed by 6 bits of the SAS bytes.
EMOJI: tuple[tuple[str, str], ...] = (
    ("🐶", "Dog"), ("🐱", "Cat"), ("🦁", "Lion"), ("🐎", "Horse"), ("🦄", "Unicorn"),
    ("🐷", "Pig"), ("🐘", "Elephant"), ("🐰", "Rabbit"), ("🐼", "Panda"), ("🐓", "Rooster"),
    ("🐧", "Penguin"), ("🐢", "Turtle"), ("🐟", "Fish"), ("🐙", "Octopus"),
    ("🦋", "Butterfly"), ("🌷", "Flower"), ("🌳", "Tree"), ("🌵", "Cactus"),
    ("🍄", "Mushroom"), ("🌏", "Globe"), ("🌙", "Moon"), ("☁️", "Cloud"), ("🔥", "Fire"),
    ("🍌", "Banana"), ("🍎", "Apple"), ("🍓", "Strawberry"), ("🌽", "Corn"), ("🍕", "Pizza"),
    ("🎂", "Cake"), ("❤️", "Heart"), ("😀", "Smiley"), ("🤖", "Robot"), ("🎩", "Hat"),
    ("👓", "Glasses"), ("🔧", "Spanner"), ("🎅", "Santa"), ("👍", "Thumbs Up"),
    ("☂️", "Umbrella"), ("⌛", "Hourglass"), ("⏰", "Clock"), ("🎁", "Gift"),
    ("💡", "Light Bulb"), ("📕", "Book"), ("✏️", "Pencil"), ("📎", "Paperclip"),
    ("✂️", "Scissors"), ("🔒", "Lock"), ("🔑", "Key"), ("🔨", "Hammer"),
    ("☎️", "Telephone"), ("🏁", "Flag"), ("🚂", "Train"), ("🚲", "Bicycle"),
    ("✈️", "Aeroplane"), ("🚀", "Rocket"), ("🏆", "Trophy"), ("⚽", "Ball"),
    ("🎸", "Guitar"), ("🎺", "Trumpet"), ("🔔", "Bell"), ("⚓", "Anchor"),
    ("🎧", "Headphones"), ("📁", "Folder"), ("📌", "Pin"),
)  # fmt: skip


@dataclass(frozen=True)
class ShortCode:
    """What the operator compares: 7 emoji and 3 numbers."""

    emoji: tuple[tuple[str, str], ...]
    decimals: tuple[int, int, int]

    def text(self) -> str:
        names = "  ".join(f"{symbol} {name}" for symbol, name in self.emoji)
        return f"{names}  |  {' '.join(str(d) for d in self.decimals)}"


def short_code(sas_bytes: bytes) -> ShortCode:
    """The spec's emoji (7 × 6 bits) and decimals (3 × 13 bits, + 1000) of 6 SAS bytes."""
    if len(sas_bytes) < 6:
        raise ValueError("6 bytes expected")
    bits = int.from_bytes(sas_bytes[:6], "big")
    emoji = tuple(EMOJI[(bits >> (42 - 6 * i)) & 0x3F] for i in range(7))
    decimals = (
        ((bits >> 35) & 0x1FFF) + 1000,
        ((bits >> 22) & 0x1FFF) + 1000,
        ((bits >> 9) & 0x1FFF) + 1000,
    )
    return ShortCode(emoji, decimals)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def commitment(public_key: str, start_content: Mapping[str, Any]) -> str:
    """Unpadded base64 of SHA-256(key || canonical JSON of the start content)."""
    digest = hashlib.sha256((public_key + canonical_json(start_content)).encode()).digest()
    return base64.b64encode(digest).decode().rstrip("=")


class Invalid(Exception):
    """A content that breaks the spec's schema (m.invalid_message)."""


def _str(content: Mapping[str, Any], key: str, limit: int = MAX_ID) -> str:
    value = content.get(key)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise Invalid(key)
    return value


def _strs(content: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = content.get(key)
    if not isinstance(value, list) or len(value) > MAX_LIST:
        raise Invalid(key)
    if not all(isinstance(v, str) and len(v) <= MAX_ID for v in value):
        raise Invalid(key)
    return tuple(value)


__all__ = [
    "EMOJI",
    "MAX_ID",
    "MAX_KEY",
    "MAX_LIST",
    "Invalid",
    "ShortCode",
    "_str",
    "_strs",
    "canonical_json",
    "commitment",
    "short_code",
]
