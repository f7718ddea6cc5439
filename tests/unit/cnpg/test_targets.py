"""Recovery targets render as CNPG's recoveryTarget fields, valid against the real CRDs, and
the local engine turns them into PostgreSQL's recovery_target settings."""

from __future__ import annotations

from typing import Any

import pytest

from paas_pitr.cnpg.builders import RecoveryTarget, RenderConfig, build_recovery_cluster
from paas_pitr.cnpg.schema import CrdRegistry
from paas_pitr.cnpg.targets import AtLsn, AtRestorePoint, AtXid, EndOfArchive
from paas_pitr.engines.local.recovery import recovery_target_settings

CASES: list[tuple[RecoveryTarget, dict[str, Any] | None, dict[str, str]]] = [
    (
        AtLsn("0/5000ABC", "20260504T030000"),
        {"backupID": "20260504T030000", "targetLSN": "0/5000ABC"},
        {"recovery_target_lsn": "0/5000ABC"},
    ),
    (
        AtLsn("0/5000ABC", "20260504T030000", inclusive=False),
        {"backupID": "20260504T030000", "targetLSN": "0/5000ABC", "exclusive": True},
        {"recovery_target_lsn": "0/5000ABC", "recovery_target_inclusive": "off"},
    ),
    (
        AtXid(729, "20260504T030000", inclusive=False),
        {"backupID": "20260504T030000", "targetXID": "729", "exclusive": True},
        {"recovery_target_xid": "729", "recovery_target_inclusive": "off"},
    ),
    (
        AtRestorePoint("before migration 42", "20260504T030000"),
        {"backupID": "20260504T030000", "targetName": "before migration 42"},
        {"recovery_target_name": "before migration 42"},
    ),
    (EndOfArchive(), None, {}),
]


def _cluster(target: RecoveryTarget, mode: str) -> dict[str, Any]:
    return build_recovery_cluster(
        source_cluster="db-acme-app-1",
        tenant="acme",
        app="app-1",
        restore_id="0bd91f2a7c",
        target=target,
        plan="pro",
        config=RenderConfig(mode=mode),  # type: ignore[arg-type]
    ).cluster


@pytest.mark.parametrize(("target", "rendered", "settings"), CASES)
@pytest.mark.parametrize("mode", ["in-tree", "plugin"])
def test_rendered_valid_and_executed(
    crd_registry: CrdRegistry,
    crd_registry_v130: CrdRegistry,
    target: RecoveryTarget,
    rendered: dict[str, Any] | None,
    settings: dict[str, str],
    mode: str,
) -> None:
    cluster = _cluster(target, mode)
    recovery = cluster["spec"]["bootstrap"]["recovery"]
    assert recovery.get("recoveryTarget") == rendered
    assert crd_registry.errors(cluster) == []
    assert crd_registry_v130.errors(cluster) == []
    assert recovery_target_settings(recovery.get("recoveryTarget") or {}) == settings


def test_a_misspelt_target_field_is_refused_by_the_schema(crd_registry: CrdRegistry) -> None:
    cluster = _cluster(AtLsn("0/5000ABC", "20260504T030000"), "in-tree")
    cluster["spec"]["bootstrap"]["recovery"]["recoveryTarget"]["targetLsn"] = "0/1"
    assert crd_registry.errors(cluster) == [
        'unknown field "spec.bootstrap.recovery.recoveryTarget.targetLsn"'
    ]
