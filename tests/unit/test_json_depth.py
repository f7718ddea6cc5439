"""Nesting depth is counted without parsing (Python's parser recurses on nesting)."""

from __future__ import annotations

import time

import pytest

from paas_pitr.api.deps import json_depth


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("", 0),
        ('"x"', 0),
        ("1", 0),
        ("{}", 1),
        ('{"a": [1, {"b": 2}]}', 3),
        ('{"a": "[[[[{{{{"}', 1),
        ('{"a": "\\"[[", "b": ["\\\\"]}', 2),
        ("[" * 5000 + "]" * 5000, 5000),
        ('{"a":' * 100 + "1" + "}" * 100, 100),
    ],
)
def test_depth(text: str, depth: int) -> None:
    assert json_depth(text) == depth


@pytest.mark.parametrize(
    "text",
    ["[" * 65536, '"' + "a" * 65535, '"' + "\\" * 65535, '"a",' * 16384, '{"k":' * 13000],
)
def test_linear_on_the_largest_bodies(text: str) -> None:
    started = time.perf_counter()
    json_depth(text)
    assert time.perf_counter() - started < 0.5
