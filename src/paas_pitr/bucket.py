"""The control plane's own access to the backup bucket.

CNPG and the Barman Cloud plugin apply retention to the archives of live clusters only: once
an addon's Cluster is deleted, nothing ever deletes its archive, and barman's RECOVERY
WINDOW policy always keeps the newest backup anyway. To list, restore and finally expire the
archive of a deleted incarnation the control plane reads and writes the bucket itself, with
what this module offers: the server folders under an app's prefix, a server's completed base
backups read from barman's own catalog (``<server>/base/<backup_id>/backup.info``, read by
:mod:`paas_pitr.catalog`), the time
of its newest WAL object, small JSON objects (the index of deleted incarnations), and
deleting everything under a prefix.

Keys are relative to the bucket (``acme/app-1/db-acme-app-1-0a1b2c3d/base/...``);
:func:`destination_prefix` turns a pinned destination (``s3://<bucket>/<tenant>/<app>``) into
one. :class:`S3Bucket` talks to any S3 endpoint through boto3 (clients from
:mod:`paas_pitr.s3`); :class:`InMemoryBucket` is the fake the tests and the in-memory engine
fill.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from paas_pitr.catalog import DONE, CatalogBackup, parse_backup_info, render_backup_info
from paas_pitr.errors import ObjectStoreError
from paas_pitr.s3 import cached_client

log = logging.getLogger(__name__)

# The newest WAL lives in the greatest ``wals/<timeline+log>/`` folders; two, because
# parallel archiving can upload the tail of one folder after the head of the next.
_WAL_FOLDERS_SCANNED = 2
_DELETE_BATCH = 1000

T = TypeVar("T")


def destination_prefix(destination: str, bucket: str) -> str:
    """``s3://<bucket>/<tenant>/<app>`` -> ``<tenant>/<app>``; refuses another bucket, so a
    prefix computed here can never address objects the control plane does not own."""
    name, _, path = destination.removeprefix("s3://").partition("/")
    if not destination.startswith("s3://") or name != bucket or not path.strip("/"):
        raise ObjectStoreError(
            f"destination {destination!r} is not under the backup bucket {bucket!r}",
            details={"destination": destination, "bucket": bucket},
        )
    return path.strip("/")


# --- the interface -----------------------------------------------------------------------


class Bucket(Protocol):
    """The control plane's own access to the backup bucket. Every error is an
    ``ObjectStoreError`` (503 ``object_store_unavailable``)."""

    @property
    def name(self) -> str: ...

    async def server_folders(self, prefix: str) -> list[str]:
        """The server folders directly under ``prefix`` (``<tenant>/<app>``), sorted."""

    async def base_backups(self, prefix: str, server: str) -> list[CatalogBackup]:
        """``server``'s completed base backups (``status=DONE``, end known), oldest first."""

    async def newest_wal(self, prefix: str, server: str) -> datetime | None:
        """When the newest object of ``server``'s WAL archive was written (UTC)."""

    async def put_json(self, key: str, payload: Mapping[str, Any]) -> None: ...

    async def get_json(self, key: str) -> dict[str, Any] | None:
        """The object's JSON, ``None`` when absent or not a JSON object."""

    async def list_keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix``, sorted."""

    async def delete(self, key: str) -> None: ...

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every object under ``prefix`` (a folder at least three levels deep, such
        as ``<tenant>/<app>/<server>/``); the number deleted."""

    async def list_objects(self, prefix: str) -> list[ListedObject]:
        """Every object under ``prefix`` with its size and time, sorted by key."""

    async def download(self, key: str, path: Path) -> None:
        """Write the object to ``path``, streamed (a WAL segment is never held whole);
        ``ObjectStoreError`` when it is missing."""


@dataclass(frozen=True, slots=True)
class ListedObject:
    key: str
    modified: datetime
    size: int = 0


def _check_prefix(prefix: str) -> str:
    # Deleting is never wider than one server folder: a slip that computed an empty, a
    # tenant's or an app's prefix must fail here, not empty the bucket.
    parts = prefix.split("/")
    if not prefix.endswith("/") or len(parts) < 4 or any(not p for p in parts[:-1]):
        raise ObjectStoreError(
            f"refusing to delete under {prefix!r}: not a folder three levels deep",
            details={"prefix": prefix},
        )
    return prefix


class _CatalogBucket:
    """What both implementations share: the catalog and WAL logic on top of four raw
    operations (list, get, put, delete), which run in a worker thread for boto3."""

    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    # raw operations, synchronous -------------------------------------------------------

    def _list(self, prefix: str, delimiter: bool) -> tuple[list[ListedObject], list[str]]:
        raise NotImplementedError

    def _get(self, key: str) -> bytes | None:
        raise NotImplementedError

    def _put(self, key: str, body: bytes) -> None:
        raise NotImplementedError

    def _delete(self, keys: list[str]) -> None:
        raise NotImplementedError

    def _download(self, key: str, path: Path) -> None:
        body = self._get(key)
        if body is None:
            raise ObjectStoreError(f"object {key!r} is missing from the backup bucket")
        path.write_bytes(body)

    async def _call(self, function: Callable[[], T]) -> T:
        return function()

    # the interface -------------------------------------------------------------------

    def _folders(self, prefix: str) -> list[str]:
        base = f"{prefix.strip('/')}/"
        _, folders = self._list(base, True)
        return sorted(f[len(base) :].strip("/") for f in folders if f.startswith(base))

    async def server_folders(self, prefix: str) -> list[str]:
        return await self._call(lambda: self._folders(prefix))

    def _backups(self, prefix: str, server: str) -> list[CatalogBackup]:
        base = f"{prefix.strip('/')}/{server}/base/"
        found: list[CatalogBackup] = []
        for backup_id in self._folders(base):
            body = self._get(f"{base}{backup_id}/backup.info")
            if body is None:
                continue  # a backup still starting, or one whose deletion was interrupted
            info = parse_backup_info(body.decode("utf-8", errors="replace"), backup_id)
            if info.status == DONE and info.end_time is not None:
                found.append(info)
        return sorted(found, key=lambda b: b.end_time or datetime.min.replace(tzinfo=UTC))

    async def base_backups(self, prefix: str, server: str) -> list[CatalogBackup]:
        return await self._call(lambda: self._backups(prefix, server))

    def _newest_wal(self, prefix: str, server: str) -> datetime | None:
        base = f"{prefix.strip('/')}/{server}/wals/"
        objects, folders = self._list(base, True)
        newest = [o.modified for o in objects]
        for folder in sorted(folders)[-_WAL_FOLDERS_SCANNED:]:
            newest.extend(o.modified for o in self._list(folder, False)[0])
        return max(newest).astimezone(UTC) if newest else None

    async def newest_wal(self, prefix: str, server: str) -> datetime | None:
        return await self._call(lambda: self._newest_wal(prefix, server))

    async def put_json(self, key: str, payload: Mapping[str, Any]) -> None:
        body = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        await self._call(lambda: self._put(key, body))

    async def get_json(self, key: str) -> dict[str, Any] | None:
        body = await self._call(lambda: self._get(key))
        if body is None:
            return None
        try:
            loaded = json.loads(body)
        except ValueError:
            log.warning("object %s is not JSON; ignored", key)
            return None
        return loaded if isinstance(loaded, dict) else None

    async def list_keys(self, prefix: str) -> list[str]:
        return await self._call(lambda: sorted(o.key for o in self._list(prefix, False)[0]))

    async def delete(self, key: str) -> None:
        await self._call(lambda: self._delete([key]))

    def _delete_prefix(self, prefix: str) -> int:
        keys = [o.key for o in self._list(_check_prefix(prefix), False)[0]]
        for start in range(0, len(keys), _DELETE_BATCH):
            self._delete(keys[start : start + _DELETE_BATCH])
        return len(keys)

    async def delete_prefix(self, prefix: str) -> int:
        return await self._call(lambda: self._delete_prefix(prefix))

    async def list_objects(self, prefix: str) -> list[ListedObject]:
        return await self._call(lambda: sorted(self._list(prefix, False)[0], key=lambda o: o.key))

    async def download(self, key: str, path: Path) -> None:
        await self._call(lambda: self._download(key, path))


class S3Bucket(_CatalogBucket):
    """The bucket on an S3 endpoint. ``endpoint`` and ``credentials`` are read at every
    call, so a restarted embedded server (new port) or rotated keys need no rebuild."""

    def __init__(
        self,
        name: str,
        endpoint: str | Callable[[], str],
        credentials: Mapping[str, str] | Callable[[], Mapping[str, str]],
    ) -> None:
        super().__init__(name)
        self._endpoint = endpoint
        self._credentials = credentials

    def _client(self) -> Any:
        endpoint = self._endpoint() if callable(self._endpoint) else self._endpoint
        credentials = self._credentials() if callable(self._credentials) else self._credentials
        return cached_client(endpoint, credentials)

    async def _call(self, function: Callable[[], T]) -> T:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await asyncio.to_thread(function)
        except (BotoCoreError, ClientError) as exc:
            raise ObjectStoreError(
                f"the backup bucket {self.name!r} is unreachable: {exc}",
                details={"bucket": self.name},
            ) from exc

    def _list(self, prefix: str, delimiter: bool) -> tuple[list[ListedObject], list[str]]:
        objects: list[ListedObject] = []
        folders: list[str] = []
        arguments: dict[str, Any] = {"Bucket": self.name, "Prefix": prefix}
        if delimiter:
            arguments["Delimiter"] = "/"
        for page in self._client().get_paginator("list_objects_v2").paginate(**arguments):
            objects.extend(
                ListedObject(item["Key"], item["LastModified"], int(item.get("Size") or 0))
                for item in page.get("Contents", [])
            )
            folders.extend(item["Prefix"] for item in page.get("CommonPrefixes", []))
        return objects, folders

    def _get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            body: bytes = self._client().get_object(Bucket=self.name, Key=key)["Body"].read()
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise
        return body

    def _download(self, key: str, path: Path) -> None:
        from botocore.exceptions import ClientError

        try:
            self._client().download_file(self.name, key, str(path))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("NoSuchKey", "404", "NotFound"):
                raise ObjectStoreError(
                    f"object {key!r} is missing from the backup bucket {self.name!r}",
                    details={"bucket": self.name, "key": key},
                ) from exc
            raise

    def _put(self, key: str, body: bytes) -> None:
        self._client().put_object(
            Bucket=self.name, Key=key, Body=body, ContentType="application/json"
        )

    def _delete(self, keys: list[str]) -> None:
        if not keys:
            return
        answer = self._client().delete_objects(
            Bucket=self.name,
            Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True},
        )
        errors = answer.get("Errors") or []
        if errors:
            first = errors[0]
            raise ObjectStoreError(
                f"the backup bucket {self.name!r} kept {len(errors)} object(s) it was asked "
                f"to delete: {first.get('Key')}: {first.get('Code')} {first.get('Message')}",
                details={"bucket": self.name, "failed": len(errors)},
            )


class InMemoryBucket(_CatalogBucket):
    """A bucket in a dict, for tests: fill it with :meth:`add_backup` / :meth:`add_wal`;
    ``down = True`` makes every call fail as an unreachable store would."""

    def __init__(self, name: str = "paas-pg-backups") -> None:
        super().__init__(name)
        self.objects: dict[str, tuple[bytes, datetime]] = {}
        self.down = False

    async def _call(self, function: Callable[[], T]) -> T:
        if self.down:
            raise ObjectStoreError(
                f"the backup bucket {self.name!r} is unreachable (simulated)",
                details={"bucket": self.name},
            )
        return function()

    def _list(self, prefix: str, delimiter: bool) -> tuple[list[ListedObject], list[str]]:
        objects: list[ListedObject] = []
        folders: set[str] = set()
        for key, (body, modified) in sorted(self.objects.items()):
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix) :]
            if delimiter and "/" in rest:
                folders.add(prefix + rest.split("/", 1)[0] + "/")
            else:
                objects.append(ListedObject(key, modified, len(body)))
        return objects, sorted(folders)

    def _get(self, key: str) -> bytes | None:
        found = self.objects.get(key)
        return found[0] if found else None

    def _put(self, key: str, body: bytes) -> None:
        self.objects[key] = (body, datetime.now(UTC))

    def _delete(self, keys: list[str]) -> None:
        for key in keys:
            self.objects.pop(key, None)

    # --- for tests ----------------------------------------------------------------------

    def put_object(self, key: str, body: bytes, modified: datetime | None = None) -> None:
        self.objects[key] = (body, modified or datetime.now(UTC))

    def add_backup(
        self,
        destination: str,
        server: str,
        begin: datetime,
        end: datetime,
        *,
        status: str = DONE,
        pg_major: int | None = 16,
        backup_id: str | None = None,
    ) -> str:
        """A base backup in barman's layout; its id (``YYYYMMDDTHHMMSS`` of its start)."""
        prefix = destination_prefix(destination, self.name)
        backup_id = backup_id or begin.astimezone(UTC).strftime("%Y%m%dT%H%M%S")
        info = CatalogBackup(backup_id, status, begin, end, pg_major)
        base = f"{prefix}/{server}/base/{backup_id}"
        self.put_object(f"{base}/backup.info", render_backup_info(info).encode(), end)
        self.put_object(f"{base}/data.tar", b"base backup", end)
        return backup_id

    def add_wal(self, destination: str, server: str, segment: str, written: datetime) -> str:
        prefix = destination_prefix(destination, self.name)
        key = f"{prefix}/{server}/wals/{segment[:16]}/{segment}.gz"
        self.put_object(key, b"wal", written)
        return key

    def keys(self, prefix: str = "") -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))
