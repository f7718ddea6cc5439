"""Intents: work the local engine records before it starts, and removes once it is done, so
that a start after a crash finds what was under way and finishes it.

One small JSON file per intent in a folder of the state directory, written atomically
(a temporary file renamed over the name), so a crash leaves either the whole intent or
none of it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class Intents:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def record(self, key: str, payload: dict[str, Any]) -> None:
        """Record (or overwrite) the intent ``key``: a file name, letters, digits, ``.-_``."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.folder / f".{key}.tmp"
        tmp.write_text(json.dumps(payload), encoding="utf-8")
        os.replace(tmp, self._path(key))

    def done(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def pending(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        """The intents whose key starts with ``prefix``, by key (unreadable ones skipped:
        a rename is atomic, so none is half-written)."""
        found: dict[str, dict[str, Any]] = {}
        if not self.folder.is_dir():
            return found
        for path in sorted(self.folder.glob(f"{prefix}*.json")):
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(loaded, dict):
                found[path.name.removesuffix(".json")] = loaded
        return found
