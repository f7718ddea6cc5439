"""Every object any builder emits validates against the real CRDs, unknown fields rejected."""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, datetime
from typing import Any

import pytest

from paas_pitr.cnpg.builders import (
    BackupEnd,
    PointInTime,
    RenderConfig,
    build_addon_manifests,
    build_backup,
    build_recovery_cluster,
    build_scheduled_backup,
    owner_reference,
)
from paas_pitr.cnpg.schema import CrdRegistry
from paas_pitr.errors import SchemaViolation

PLANS = ("free", "standard", "pro")
MODES = ("in-tree", "plugin")


def _all_objects(mode: str, plan: str) -> list[dict[str, Any]]:
    config = RenderConfig(mode=mode)  # type: ignore[arg-type]
    manifests = build_addon_manifests(
        version="16", plan=plan, tenant="acme", app="app-1", config=config
    )
    objects = list(manifests.objects())
    cluster = copy.deepcopy(manifests.cluster)
    cluster["metadata"]["uid"] = "0b8e3c1e-8f5e-4a4b-9d55-6a4f9b6c2c11"
    assert owner_reference(cluster) is not None
    scheduled = build_scheduled_backup(cluster, config)
    if scheduled is not None:
        objects.append(scheduled)
    objects.append(build_backup(cluster, "db-acme-app-1-manual-1", config))
    for target in (
        PointInTime(datetime(2026, 5, 4, 15, 30, tzinfo=UTC)),
        PointInTime(datetime(2026, 5, 4, 15, 30, tzinfo=UTC), backup_id="20260504T030000"),
        BackupEnd("20260504T030000"),
    ):
        objects.extend(
            build_recovery_cluster(
                source_cluster="db-acme-app-1",
                tenant="acme",
                app="app-1",
                restore_id="0bd91f2a7c",
                target=target,
                plan=plan,
                config=config,
            ).objects()
        )
    return objects


@pytest.mark.parametrize(("mode", "plan"), list(itertools.product(MODES, PLANS)))
def test_every_object_validates_against_main_crds(
    crd_registry: CrdRegistry, mode: str, plan: str
) -> None:
    for obj in _all_objects(mode, plan):
        assert crd_registry.errors(obj) == [], obj


@pytest.mark.parametrize(("mode", "plan"), list(itertools.product(MODES, PLANS)))
def test_every_object_validates_against_v1_30_crds(
    crd_registry_v130: CrdRegistry, mode: str, plan: str
) -> None:
    for obj in _all_objects(mode, plan):
        assert crd_registry_v130.errors(obj) == [], obj


def test_the_checker_rejects_archiving_mode(crd_registry: CrdRegistry) -> None:
    objects = _all_objects("in-tree", "pro")
    cluster = next(o for o in objects if o["kind"] == "Cluster")
    cluster["spec"]["backup"]["barmanObjectStore"]["wal"]["archivingMode"] = "continuous"
    assert crd_registry.errors(cluster) == [
        'unknown field "spec.backup.barmanObjectStore.wal.archivingMode"'
    ]
    with pytest.raises(SchemaViolation) as caught:
        crd_registry.check(cluster)
    assert caught.value.code == "invalid_object"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["spec"]["backup"].update(retentionPolicy="7 days"), "retentionPolicy"),
        (
            lambda c: c["spec"]["backup"]["barmanObjectStore"]["data"].update(compression="zstd"),
            "compression",
        ),
        (lambda c: c["spec"].update(instances="three"), "instances"),
        (lambda c: c["metadata"].update(name="Not_A_Name"), "metadata.name"),
        (lambda c: c["metadata"]["labels"].update({"x": "bad value!"}), "label value"),
        (
            lambda c: c["spec"].update(
                imageCatalogRef={"apiGroup": "x", "kind": "ImageCatalog", "name": "n", "major": 16}
            ),
            "mutually exclusive",
        ),
    ],
)
def test_the_checker_rejects_other_mistakes(
    crd_registry: CrdRegistry, mutate: Any, expected: str
) -> None:
    cluster = next(o for o in _all_objects("in-tree", "pro") if o["kind"] == "Cluster")
    mutate(cluster)
    errors = crd_registry.errors(cluster)
    assert errors and any(expected in e for e in errors), errors


def test_object_store_server_name_is_forbidden_by_cel(crd_registry: CrdRegistry) -> None:
    store = next(o for o in _all_objects("plugin", "pro") if o["kind"] == "ObjectStore")
    store["spec"]["configuration"]["serverName"] = "db-acme-app-1"
    errors = crd_registry.errors(store)
    assert any("serverName" in e and "plugin parameter" in e for e in errors), errors


def test_backup_spec_is_immutable(crd_registry: CrdRegistry) -> None:
    backup = next(o for o in _all_objects("plugin", "pro") if o["kind"] == "Backup")
    changed = copy.deepcopy(backup)
    changed["spec"]["cluster"]["name"] = "another"
    assert crd_registry.errors(changed) == []  # a create is fine
    assert any("immutable" in e for e in crd_registry.errors(changed, old=backup))


def test_unknown_kind(crd_registry: CrdRegistry) -> None:
    assert crd_registry.errors({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}})
