"""`paas-pitr doctor`: what the seed's "Operator setup" runbook needs, checked, with the fix."""

from __future__ import annotations

import asyncio
import base64
import re
from dataclasses import dataclass
from typing import Literal

from paas_pitr.engines.kubernetes.api import KubeApi
from paas_pitr.errors import PitrError
from paas_pitr.settings import Settings

Level = Literal["ok", "warning", "error"]
# The first patch release of each supported minor with the fix for point-in-time recovery
# across timelines (CNPG pull request 10818) and the fixes for backups that never finish.
MINIMUM_PATCH = {(1, 28): 4, (1, 29): 2, (1, 30): 0}
CNPG_IMAGE = re.compile(r"cloudnative-pg:v?(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    level: Level
    message: str
    fix: str | None = None


def version_verdict(major: int, minor: int, patch: int) -> Check:
    found = f"{major}.{minor}.{patch}"
    if (major, minor) < (1, 28):
        return Check(
            "CNPG version",
            "warning",
            f"CloudNativePG {found} is out of support",
            "upgrade the operator to 1.30.x (it has the cross-timeline PITR fix)",
        )
    minimum = MINIMUM_PATCH.get((major, minor))
    if minimum is not None and patch < minimum:
        return Check(
            "CNPG version",
            "warning",
            f"CloudNativePG {found} lacks the cross-timeline PITR fix (#10818)",
            f"upgrade to {major}.{minor}.{minimum} or later (1.30.x recommended)",
        )
    return Check("CNPG version", "ok", f"CloudNativePG {found}")


async def kubernetes_checks(settings: Settings, api: KubeApi) -> list[Check]:
    checks: list[Check] = []
    try:
        version = await api.request("GET", "/version")
    except PitrError as exc:
        return [
            Check(
                "Kubernetes API",
                "error",
                f"unreachable: {exc.message}",
                "check KUBECONFIG / the in-cluster service account and network access to the API",
            )
        ]
    checks.append(Check("Kubernetes API", "ok", f"reachable ({version.get('gitVersion', '?')})"))

    crd_path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
    for crd, what, needed in (
        ("clusters.postgresql.cnpg.io", "CNPG Cluster CRD", True),
        ("backups.postgresql.cnpg.io", "CNPG Backup CRD", True),
        ("scheduledbackups.postgresql.cnpg.io", "CNPG ScheduledBackup CRD", True),
        (
            "objectstores.barmancloud.cnpg.io",
            "Barman Cloud Plugin ObjectStore CRD",
            settings.cnpg_mode == "plugin",
        ),
    ):
        present = await api.get_path(crd_path + crd) is not None
        if present:
            checks.append(Check(what, "ok", f"{crd} installed"))
        elif needed:
            checks.append(
                Check(
                    what,
                    "error",
                    f"{crd} not found",
                    "install the CloudNativePG operator (and, for plugin mode, the Barman Cloud "
                    "Plugin) with their release manifests",
                )
            )
        else:
            checks.append(
                Check(
                    what,
                    "warning",
                    f"{crd} not found: in-tree barmanObjectStore will be used",
                    "install the Barman Cloud Plugin before CNPG 1.31 removes the in-tree support",
                )
            )

    deployments = await api.get_path(
        f"/apis/apps/v1/namespaces/{settings.cnpg_operator_namespace}/deployments"
    )
    images = [
        container.get("image", "")
        for item in (deployments or {}).get("items", [])
        for container in item.get("spec", {})
        .get("template", {})
        .get("spec", {})
        .get("containers", [])
    ]
    match = next((m for image in images if (m := CNPG_IMAGE.search(image))), None)
    if match:
        checks.append(version_verdict(*(int(g) for g in match.groups())))
    else:
        checks.append(
            Check(
                "CNPG version",
                "warning",
                f"no CloudNativePG operator Deployment found in {settings.cnpg_operator_namespace}",
                "set PAAS_PITR_CNPG_OPERATOR_NAMESPACE to where the operator runs",
            )
        )

    secret_name = settings.s3_secret_name
    secret = await api.get_path(f"/api/v1/namespaces/{settings.namespace}/secrets/{secret_name}")
    runbook = (
        f"kubectl create secret generic {secret_name} --namespace {settings.namespace} "
        "--from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=..."
    )
    data = (secret or {}).get("data") or {}
    missing = [k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not data.get(k)]
    if secret is None:
        checks.append(
            Check("S3 Secret", "error", f"{secret_name} not found in {settings.namespace}", runbook)
        )
    elif missing:
        checks.append(
            Check("S3 Secret", "error", f"{secret_name} lacks {', '.join(missing)}", runbook)
        )
    else:
        checks.append(Check("S3 Secret", "ok", f"{secret_name} has both keys"))
        checks.append(
            await bucket_check(
                settings,
                {
                    k: base64.b64decode(data[k]).decode()
                    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
                },
            )
        )
    return checks


async def bucket_check(settings: Settings, credentials: dict[str, str]) -> Check:
    from paas_pitr.s3 import s3_client

    def probe() -> None:
        s3_client(settings.effective_s3_endpoint_url, credentials).head_bucket(
            Bucket=settings.bucket
        )

    try:
        await asyncio.to_thread(probe)
    except Exception as exc:  # botocore's error tree: any failure is the finding
        return Check(
            "S3 bucket",
            "error",
            f"{settings.bucket} at {settings.effective_s3_endpoint_url} is not reachable: {exc}",
            "create the bucket (runbook step 1; barman-cloud >= 3.16 does not create it), check "
            "the keys, and allow egress to the S3 endpoint (NetworkPolicy allow-https-egress)",
        )
    return Check(
        "S3 bucket", "ok", f"{settings.bucket} reachable at {settings.effective_s3_endpoint_url}"
    )
