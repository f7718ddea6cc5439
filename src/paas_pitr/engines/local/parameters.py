"""The settings an instance's server runs with: the Cluster's ``spec.postgresql.parameters``
minus those the engine owns, plus the engine's own (WAL archiving through the instance's
script, UTC zones, the log line prefix :mod:`.serverlog` reads)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from paas_pitr.engines.base import Manifest
from paas_pitr.postgres.server import UTC_ZONE_SETTINGS

_PARAMETER = re.compile(r"^[a-z_][a-z0-9_.]*$")
# Parameters the engine owns, as CNPG owns its fixed parameters; the zones are owned so
# that no user parameter moves a server off UTC.
FIXED = frozenset(
    {
        *UTC_ZONE_SETTINGS,
        "port",
        "listen_addresses",
        "unix_socket_directories",
        "archive_mode",
        "archive_command",
        "restore_command",
        "wal_level",
        "hot_standby",
    }
)


def cluster_parameters(cluster: Manifest) -> dict[str, Any]:
    parameters: dict[str, Any] = (
        cluster.get("spec", {}).get("postgresql", {}).get("parameters") or {}
    )
    return parameters


def server_settings(
    parameters: Mapping[str, Any], archive_script: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    settings = {
        key: str(value)
        for key, value in parameters.items()
        if _PARAMETER.match(key) and key not in FIXED
    }
    settings.update(
        {
            "wal_level": "replica",
            "archive_mode": "on",
            "archive_command": f"'{archive_script}' \"%p\"",
            "max_wal_senders": "4",
            "max_connections": "50",
            "log_line_prefix": "%m [%p] ",
            **UTC_ZONE_SETTINGS,
        }
    )
    settings.setdefault("archive_timeout", "300s")
    settings.update(extra or {})
    return settings
