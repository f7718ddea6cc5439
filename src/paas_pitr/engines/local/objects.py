"""The local engine's object database: CNPG objects in a SQLite file under the state
directory (``objects.sqlite3``).

It plays the Kubernetes API server (and its etcd) for one machine: uids, resource versions,
a separate status, label selection. It keeps working while the audit database is down.
Not to be confused with the CNPG ``ObjectStore`` kind (one of the objects it holds) nor
with the S3 object storage the archives go to (:mod:`.objectstorage`).
"""

from __future__ import annotations

import copy
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from paas_pitr.engines.base import Manifest
from paas_pitr.errors import Conflict

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ObjectDatabase:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Every addon's spec is in it: the service's user alone reads it (SQLite gives its
        # -wal and -shm files the database file's mode).
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        os.chmod(path, 0o600)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        # Writes through this connection, per kind; another connection's commits show in
        # SQLite's data_version instead (it ignores the connection's own).
        self._writes: dict[str, int] = {}

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _next_version(self) -> str:
        row = self._db.execute(
            "INSERT INTO counters (name, value) VALUES ('rv', 1) "
            "ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value"
        ).fetchone()
        return str(row[0])

    @staticmethod
    def _join(body: str, status: str) -> Manifest:
        obj: Manifest = json.loads(body)
        loaded = json.loads(status)
        if loaded:
            obj["status"] = loaded
        return obj

    def revision(self, kind: str) -> str:
        """Changes whenever an object of ``kind`` changes (spec, metadata or status), written
        by this process or another one; without reading the objects."""
        with self._lock:
            (external,) = self._db.execute("PRAGMA data_version").fetchone()
            return f"{self._writes.get(kind, 0)}.{external}"

    def _wrote(self, kind: str) -> None:
        self._writes[kind] = self._writes.get(kind, 0) + 1

    def get(self, kind: str, name: str) -> Manifest | None:
        with self._lock:
            row = self._db.execute(
                "SELECT body, status FROM objects WHERE kind = ? AND name = ?", (kind, name)
            ).fetchone()
        return self._join(*row) if row else None

    def list(self, kind: str, labels: Mapping[str, str] | None = None) -> list[Manifest]:
        with self._lock:
            rows = self._db.execute(
                "SELECT body, status FROM objects WHERE kind = ? ORDER BY name", (kind,)
            ).fetchall()
        found = [self._join(*row) for row in rows]
        wanted = dict(labels or {})
        return [
            obj
            for obj in found
            if all(obj["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
        ]

    def put(self, obj: Manifest, *, create_only: bool = False) -> Manifest:
        """Create or replace an object's spec and metadata; status is kept (subresource)."""
        body = copy.deepcopy(obj)
        body.pop("status", None)
        kind, name = body["kind"], body["metadata"]["name"]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "SELECT body, status FROM objects WHERE kind = ? AND name = ?", (kind, name)
                ).fetchone()
                if row is not None and create_only:
                    raise Conflict(f"{kind} {name!r} already exists")
                metadata = body["metadata"]
                if row is not None:
                    previous = json.loads(row[0])["metadata"]
                    metadata["uid"] = previous["uid"]
                    metadata["creationTimestamp"] = previous["creationTimestamp"]
                    status = row[1]
                else:
                    metadata.setdefault("uid", str(uuid.uuid4()))
                    metadata.setdefault("creationTimestamp", _now())
                    status = "{}"
                metadata["resourceVersion"] = self._next_version()
                self._db.execute(
                    "INSERT INTO objects (kind, name, body, status) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (kind, name) DO UPDATE SET body = excluded.body",
                    (kind, name, json.dumps(body), status),
                )
                self._db.execute("COMMIT")
                self._wrote(kind)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return self._join(json.dumps(body), status)

    def update_status(self, kind: str, name: str, status: Mapping[str, Any]) -> bool:
        """Merge ``status`` into the object's status; ``False`` if the object is gone."""
        with self._lock:
            row = self._db.execute(
                "SELECT status FROM objects WHERE kind = ? AND name = ?", (kind, name)
            ).fetchone()
            if row is None:
                return False
            merged = {**json.loads(row[0]), **status}
            self._db.execute(
                "UPDATE objects SET status = ? WHERE kind = ? AND name = ?",
                (json.dumps(merged, default=str), kind, name),
            )
            self._wrote(kind)
        return True

    def delete(self, kind: str, name: str) -> bool:
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM objects WHERE kind = ? AND name = ?", (kind, name)
            )
            self._wrote(kind)
        return cursor.rowcount > 0
