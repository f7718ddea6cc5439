"""Typed settings, read from ``PAAS_PITR_*`` environment variables.

Every command (``serve``, ``render``, ``token``...) reads the same settings, so a token minted
by ``paas-pitr token create`` is accepted by a server started with the same state directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from paas_pitr.errors import InvalidSetting

CnpgMode = Literal["in-tree", "plugin", "auto"]
EngineName = Literal["local", "kubernetes"]
DataCompression = Literal["gzip", "bzip2", "snappy", "lz4", "none"]

# The endpoint of the seed document: the platform's production object store.
DEFAULT_S3_ENDPOINT = "https://s3.gra.io.cloud.ovh.net"


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

    # --- which engine runs the databases, and in which CNPG form objects are rendered
    engine: EngineName = "local"
    cnpg_mode: CnpgMode = "auto"

    # --- where backups go (pinned naming: see paas_pitr.cnpg.naming)
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3 endpoint rendered into the objects. Unset: the seed's endpoint for "
        "Kubernetes, the embedded S3 server for the local engine.",
    )
    bucket: str = "paas-pg-backups"
    s3_secret_name: str = "ovh-s3-creds"

    # --- how clusters are rendered
    namespace: str = "paas-apps"
    cnpg_operator_namespace: str = "cnpg-system"
    instances: int = Field(default=3, ge=1, le=9)
    storage_size: str = "50Gi"
    image_repository: str = "ghcr.io/cloudnative-pg/postgresql"
    default_pg_version: str = "16"
    backup_schedule: str | None = Field(
        default=None,
        description="6-field cron (seconds first, UTC) for the daily base backup; it must "
        "run exactly once a day. Unset: a time between 00:00 and 05:59 UTC derived from the "
        "cluster name, spreading the load.",
    )
    base_backup_compression: DataCompression = "snappy"
    archive_timeout_seconds: int = Field(default=60, ge=1, le=3600)
    recovery_wal_max_parallel: int = Field(default=4, ge=1, le=16)

    # --- the control plane itself
    state_dir: Path = Field(default_factory=default_state_dir)
    database_url: str | None = None
    token_secret: SecretStr | None = Field(
        default=None,
        description="Key that signs API tokens. Unset: generated once into the state directory.",
    )
    s3_access_key_id: SecretStr | None = Field(
        default=None, description="Local engine with an external S3 endpoint: the access key"
    )
    s3_secret_access_key: SecretStr | None = None
    heartbeat_seconds: float = Field(
        default=5.0, gt=0, le=300, description="Local engine: heartbeat commit interval"
    )
    backup_timeout_seconds: int = Field(default=3600, ge=10)
    retention_sweep_seconds: float = Field(
        default=3600,
        gt=0,
        description="How often the API process deletes the archives of deleted addons whose "
        "retention has passed",
    )
    restore_timeout_seconds: int = Field(default=6 * 3600, ge=10)
    min_free_disk_mb: int = Field(
        default=256,
        ge=0,
        description="Changes are refused (503 audit_unavailable) while the state directory's "
        "disk has less free space: their audit events could not be made durable, and new "
        "servers would starve the ones already running",
    )
    audit_stuck_seconds: float = Field(
        default=300,
        gt=0,
        description="/readyz fails once audit events have waited this long without any being "
        "delivered to the audit database",
    )
    pg_os_user: str = "postgres"
    pg_bin: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)

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
