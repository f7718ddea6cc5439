"""`paas-pitr doctor` against the API double (and the embedded S3 server for the bucket)."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from paas_pitr.doctor import Check, kubernetes_checks, version_verdict
from paas_pitr.engines.local.objectstorage import EmbeddedS3
from paas_pitr.s3 import ensure_bucket
from paas_pitr.settings import KUBE_REQUEST_RETRY, Settings
from tests.integration.conftest import KubernetesHarness


@pytest.fixture
async def kube(kube: KubernetesHarness) -> AsyncIterator[KubernetesHarness]:
    yield kube
    await kube.engine.close()


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def operator(version: str) -> dict[str, object]:
    image = f"ghcr.io/cloudnative-pg/cloudnative-pg:{version}"
    return {"spec": {"template": {"spec": {"containers": [{"image": image}]}}}}


@pytest.mark.parametrize(
    ("version", "level"),
    [
        ((1, 27, 9), "warning"),
        ((1, 28, 3), "warning"),
        ((1, 28, 4), "ok"),
        ((1, 29, 1), "warning"),
        ((1, 29, 2), "ok"),
        ((1, 30, 0), "ok"),
        ((1, 31, 2), "ok"),
    ],
)
def test_version_verdicts(version: tuple[int, int, int], level: str) -> None:
    assert version_verdict(*version).level == level


async def test_missing_secret_and_old_operator(kube: KubernetesHarness, settings: Settings) -> None:
    kube.double.deployments["cnpg-system"] = [operator("1.29.1")]
    checks = by_name(await kubernetes_checks(settings, kube.engine.api))
    assert checks["Kubernetes API"].level == "ok"
    assert checks["CNPG Cluster CRD"].level == "ok"
    assert checks["CNPG version"].level == "warning"
    assert "1.29.2" in (checks["CNPG version"].fix or "")
    secret = checks["S3 Secret"]
    assert secret.level == "error"
    assert secret.fix is not None and "kubectl create secret generic ovh-s3-creds" in secret.fix


async def test_missing_crds(kube: KubernetesHarness, settings: Settings) -> None:
    kube.double.crds_present.clear()
    checks = by_name(await kubernetes_checks(settings, kube.engine.api))
    assert checks["CNPG Cluster CRD"].level == "error"
    assert checks["Barman Cloud Plugin ObjectStore CRD"].level == "warning"


async def test_everything_in_place(
    kube: KubernetesHarness, settings: Settings, workdir: Path
) -> None:
    s3 = EmbeddedS3(workdir / "doctor-s3")
    s3.start()
    try:
        ensure_bucket(s3.url, s3.credentials, settings.bucket)
        kube.double.deployments["cnpg-system"] = [operator("1.30.0")]
        kube.double.secrets["ovh-s3-creds"] = {
            k: base64.b64encode(v.encode()).decode() for k, v in s3.credentials.items()
        }
        local = settings.model_copy(update={"s3_endpoint_url": s3.url})
        checks = await kubernetes_checks(local, kube.engine.api)
        assert [c for c in checks if c.level == "error"] == []
        assert by_name(checks)["S3 bucket"].level == "ok"
        # Wrong keys: the bucket check fails with what to do.
        kube.double.secrets["ovh-s3-creds"]["AWS_SECRET_ACCESS_KEY"] = base64.b64encode(
            b"x"
        ).decode()
        bucket = by_name(await kubernetes_checks(local, kube.engine.api))["S3 bucket"]
        assert bucket.level == "error"
    finally:
        s3.stop()


async def test_unreachable_api(settings: Settings) -> None:
    import httpx

    from paas_pitr.engines.kubernetes.api import KubeApi
    from paas_pitr.postgres.server import pick_port

    api = KubeApi(
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{pick_port()}"),
        "paas-apps",
        retry=dataclasses.replace(KUBE_REQUEST_RETRY, attempts=1),
    )
    checks = await kubernetes_checks(settings, api)
    await api.close()
    assert [c.level for c in checks] == ["error"]
