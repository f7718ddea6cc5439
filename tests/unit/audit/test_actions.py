"""The audit actions the CLI accepts are exactly the ones the service writes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import paas_pitr
from paas_pitr.audit.actions import ACTIONS, known_action
from paas_pitr.errors import InvalidInput

SOURCE = Path(paas_pitr.__file__).parent


def written_actions() -> set[str]:
    """Every ``addon.*`` action the service passes to the audit log: a literal, or an
    f-string over the restore outcomes (``addon.restore_{state}``)."""
    found: set[str] = set()
    for path in SOURCE.rglob("*.py"):
        if path.parts[-2:] == ("audit", "actions.py") or path.name.startswith("cli"):
            continue
        nodes = list(ast.walk(ast.parse(path.read_text())))
        # The literal pieces of f-strings are not actions themselves.
        pieces = {id(v) for n in nodes if isinstance(n, ast.JoinedStr) for v in n.values}
        for node in nodes:
            if isinstance(node, ast.JoinedStr):
                head = node.values[0]
                if isinstance(head, ast.Constant) and head.value == "addon.restore_":
                    found |= {"addon.restore_ready", "addon.restore_failed"}
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if id(node) in pieces:
                    continue
                if node.value.startswith("addon.") and " " not in node.value:
                    found.add(node.value)
    return found


def test_the_known_actions_are_the_ones_written() -> None:
    assert written_actions() == set(ACTIONS)


def test_an_unknown_action_is_refused_with_the_list() -> None:
    assert known_action("addon.create") == "addon.create"
    with pytest.raises(InvalidInput) as refused:
        known_action("addon.created")
    assert refused.value.message == (
        "unknown audit action 'addon.created'; the known actions: " + ", ".join(ACTIONS)
    )
