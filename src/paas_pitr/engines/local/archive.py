"""Reading the archive configuration out of CNPG objects, in either form, and the keys
that open it.

The local engine executes what the objects say: an in-tree ``spec.backup.barmanObjectStore``
or a plugin entry pointing at an ``ObjectStore``, and for recovery an ``externalClusters``
entry. A wrong manifest therefore fails a real restore instead of passing a string check.
:class:`ArchiveResolver` answers both questions the engine asks of a Cluster: where its
archive is (:class:`ArchiveConfig`), and with which credentials (its Secret's keys).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from paas_pitr.cnpg import naming
from paas_pitr.engines.base import Manifest
from paas_pitr.engines.local.folders import NotAFolder, open_beneath
from paas_pitr.errors import InvalidInput, MissingSecret
from paas_pitr.postgres.server import OsUser

_RETENTION = re.compile(r"^([1-9][0-9]*)([dwm])$")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+@-]*")


@dataclass(frozen=True, slots=True)
class ServedFolder:
    """A folder of the embedded S3 server's store: ``root`` (the service's own folder,
    trusted) and the components below it, which the S3 server's user owns and could turn
    into symbolic links: :meth:`open` never follows one."""

    root: Path
    parts: tuple[str, ...]

    @property
    def path(self) -> Path:
        return self.root.joinpath(*self.parts)

    def child(self, *names: str) -> ServedFolder:
        return ServedFolder(self.root, (*self.parts, *names))

    def open(self, user: OsUser | None, *, create: bool) -> int:
        """A descriptor of the folder (close-on-exec), each component opened without
        following symbolic links; with ``create``, a missing one is made (owned by
        ``user``, the S3 server's, as the server would make it) and flushed into its
        parent. Raises OSError, for a symbolic link too."""
        try:
            return open_beneath(self.root, self.parts, user, create=create, flush=True)
        except NotAFolder as exc:
            raise exc.cause from None  # the file system's own error, as its callers expect


def plain_name(name: str) -> bool:
    """Whether ``name`` is one path component that S3 keys, barman's key joining and the
    file system all read the same way: letters, digits and ``._=+@-``, not hidden, no
    ``..``."""
    return bool(_PLAIN_NAME.fullmatch(name)) and ".." not in name


_RETENTION_UNITS = {"d": "DAYS", "w": "WEEKS", "m": "MONTHS"}
ObjectLookup = Callable[[str, str], Manifest | None]


@dataclass(frozen=True, slots=True)
class ArchiveConfig:
    """Where one server's base backups and WAL live, and how to reach it."""

    destination: str
    server_name: str
    endpoint_url: str | None
    secret_refs: Mapping[str, tuple[str, str]]
    """env var -> (Secret name, key)."""
    wal_compression: str | None = None
    wal_max_parallel: int | None = None
    data_compression: str | None = None
    data_jobs: int | None = None
    immediate_checkpoint: bool = False
    retention: str | None = None

    @property
    def bucket_and_prefix(self) -> tuple[str, str]:
        without_scheme = self.destination.removeprefix("s3://")
        bucket, _, prefix = without_scheme.partition("/")
        return bucket, prefix.strip("/")

    @property
    def server_prefix(self) -> str:
        _, prefix = self.bucket_and_prefix
        return f"{prefix}/{self.server_name}/" if prefix else f"{self.server_name}/"

    def barman_retention(self) -> str | None:
        if not self.retention:
            return None
        match = _RETENTION.match(self.retention)
        if not match:
            return None
        return f"RECOVERY WINDOW OF {match.group(1)} {_RETENTION_UNITS[match.group(2)]}"


def _from_store(store: Mapping[str, Any], server_name: str, retention: str | None) -> ArchiveConfig:
    destination = store.get("destinationPath")
    if not isinstance(destination, str) or not destination.startswith("s3://"):
        raise InvalidInput(f"destinationPath {destination!r} is not an s3:// URL")
    credentials = store.get("s3Credentials") or {}
    refs: dict[str, tuple[str, str]] = {}
    for field, env in (
        ("accessKeyId", "AWS_ACCESS_KEY_ID"),
        ("secretAccessKey", "AWS_SECRET_ACCESS_KEY"),
        ("sessionToken", "AWS_SESSION_TOKEN"),
    ):
        ref = credentials.get(field)
        if isinstance(ref, Mapping) and ref.get("name") and ref.get("key"):
            refs[env] = (str(ref["name"]), str(ref["key"]))
    wal = store.get("wal") or {}
    data = store.get("data") or {}
    return ArchiveConfig(
        destination=destination.rstrip("/"),
        server_name=server_name,
        endpoint_url=store.get("endpointURL"),
        secret_refs=refs,
        wal_compression=wal.get("compression"),
        wal_max_parallel=wal.get("maxParallel"),
        data_compression=data.get("compression"),
        data_jobs=data.get("jobs"),
        immediate_checkpoint=bool(data.get("immediateCheckpoint", False)),
        retention=retention,
    )


def _plugin_store(
    parameters: Mapping[str, Any], lookup: ObjectLookup, default_server: str
) -> ArchiveConfig:
    store_name = parameters.get("barmanObjectName")
    if not store_name:
        raise InvalidInput("plugin parameters lack barmanObjectName")
    store = lookup("ObjectStore", str(store_name))
    if store is None:
        raise InvalidInput(f"ObjectStore {store_name!r} not found")
    spec = store.get("spec") or {}
    return _from_store(
        spec.get("configuration") or {},
        str(parameters.get("serverName") or default_server),
        spec.get("retentionPolicy"),
    )


def own_archive(cluster: Manifest, lookup: ObjectLookup) -> ArchiveConfig | None:
    """Where this cluster archives its WAL and base backups, or ``None``."""
    name = cluster["metadata"]["name"]
    spec = cluster.get("spec") or {}
    for plugin in spec.get("plugins") or []:
        if plugin.get("name") == naming.BARMAN_PLUGIN_NAME and plugin.get("enabled", True):
            return _plugin_store(plugin.get("parameters") or {}, lookup, name)
    backup = spec.get("backup") or {}
    store = backup.get("barmanObjectStore")
    if store:
        return _from_store(
            store, str(store.get("serverName") or name), backup.get("retentionPolicy")
        )
    return None


def recovery_source(cluster: Manifest, lookup: ObjectLookup) -> ArchiveConfig | None:
    """The archive a ``bootstrap.recovery`` cluster restores from, or ``None``."""
    spec = cluster.get("spec") or {}
    recovery = (spec.get("bootstrap") or {}).get("recovery")
    if not recovery:
        return None
    source = recovery.get("source")
    for external in spec.get("externalClusters") or []:
        if external.get("name") != source:
            continue
        if external.get("barmanObjectStore"):
            store = external["barmanObjectStore"]
            # In-tree, an externalClusters entry without serverName reads the folder named
            # after the entry itself.
            return _from_store(store, str(store.get("serverName") or source), None)
        if external.get("plugin"):
            # Plugin default: the NEW cluster's name, a trap we honour faithfully.
            return _plugin_store(
                external["plugin"].get("parameters") or {}, lookup, cluster["metadata"]["name"]
            )
    raise InvalidInput(f"bootstrap.recovery.source {source!r} has no externalClusters entry")


class SecretSource(Protocol):
    """Where Secrets are read from (the local engine's stand-in for the namespace)."""

    def get(self, name: str) -> dict[str, str] | None: ...


class ArchiveResolver:
    """A Cluster's archives and the credentials that open them, from the objects and the
    Secrets they name. ``endpoint`` is the S3 endpoint of a configuration that names none."""

    def __init__(
        self,
        lookup: ObjectLookup,
        secrets: SecretSource,
        endpoint: Callable[[], str],
        is_embedded: Callable[[str | None], bool] = lambda url: False,
        served_folder: Callable[[str, Mapping[str, str]], ServedFolder | None] = (
            lambda d, c: None
        ),
    ) -> None:
        self.lookup = lookup
        self.secrets = secrets
        self.endpoint = endpoint
        self.is_embedded = is_embedded
        self.served_folder = served_folder

    def _current(self, config: ArchiveConfig | None) -> ArchiveConfig | None:
        # Objects keep the embedded S3 server's URL as it was when they were written; the
        # server may have moved to another port since (its old one taken): its URL today.
        if config is not None and self.is_embedded(config.endpoint_url):
            return replace(config, endpoint_url=self.endpoint())
        return config

    def own(self, cluster: Manifest) -> ArchiveConfig | None:
        """Where ``cluster`` archives (see :func:`own_archive`)."""
        return self._current(own_archive(cluster, self.lookup))

    def source(self, cluster: Manifest) -> ArchiveConfig | None:
        """The archive a recovery cluster restores from (see :func:`recovery_source`)."""
        return self._current(recovery_source(cluster, self.lookup))

    def credentials(self, config: ArchiveConfig) -> dict[str, str]:
        """The environment barman-cloud needs for ``config`` (``AWS_ACCESS_KEY_ID``...),
        read from the Secrets it names; ``MissingSecret`` when one or a key is absent."""
        credentials: dict[str, str] = {}
        for env, (secret_name, key) in config.secret_refs.items():
            secret = self.secrets.get(secret_name)
            if secret is None:
                raise MissingSecret(f'secret "{secret_name}" not found')
            if key not in secret:
                raise MissingSecret(f'secret "{secret_name}" has no key "{key}"')
            credentials[env] = secret[key]
        return credentials

    def local_folder(
        self, config: ArchiveConfig, credentials: Mapping[str, str]
    ) -> ServedFolder | None:
        """The folder of this machine that ``config``'s server folder
        (``<destination>/<serverName>``) is served from, when writing there is the same as
        writing over S3 with ``credentials`` (the embedded S3 server's archive, opened with
        its keys, a plain server name); ``None`` otherwise."""
        if not self.is_embedded(config.endpoint_url) or not plain_name(config.server_name):
            return None
        folder = self.served_folder(config.destination, credentials)
        return folder.child(config.server_name) if folder is not None else None

    def endpoint_for(self, config: ArchiveConfig) -> str:
        return config.endpoint_url or self.endpoint()
