"""bot/policy holds decisions only: no Matrix I/O, no storage, no services, no wall clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

POLICY = Path(__file__).resolve().parents[2] / "bot" / "policy"
FORBIDDEN_IMPORTS = (
    "bot.matrix",
    "bot.db",
    "bot.service",
    "mautrix.client",
    "mautrix.crypto",
    "asyncio",
    "asyncpg",
    "aiohttp",
)


def imported_modules(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", sorted(POLICY.glob("*.py")), ids=lambda p: p.name)
def test_policy_module_is_pure(path: Path) -> None:
    source = path.read_text()
    tree = ast.parse(source)
    bad = [m for m in imported_modules(tree) if m.startswith(FORBIDDEN_IMPORTS)]
    assert bad == [], f"{path.name} imports {bad}"
    assert "datetime.now(" not in source and "time.time(" not in source, "now must be passed in"
    assert not any(isinstance(n, ast.AsyncFunctionDef) for n in ast.walk(tree))
