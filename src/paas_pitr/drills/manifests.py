"""A drill's throwaway cluster: the recovery Cluster a restore would create, labelled and
shrunk for a drill.

- role ``drill`` (and the drill id): never listed among restores, never counted by their
  limits (both select ``role=restore``), never audited as a restore's outcome;
- one instance, and the source's own storage size: the smallest known to hold what the
  restore writes (the base backup's size is not in the catalog we read);
- no archiving (no ``backup`` stanza, no plugin entry): a drill writes nothing to the
  bucket, and nothing on the local engine commits into it (no heartbeat);
- its app role is made a superuser (``spec.managed.roles``), since amcheck's functions are
  not granted to other roles; the checks connect with the generated app Secret.
"""

from __future__ import annotations

import json
from typing import Any

from paas_pitr.cnpg import naming
from paas_pitr.cnpg.builders import RecoveryManifests, RecoveryTarget, RenderConfig
from paas_pitr.cnpg.builders import build_recovery_cluster as _build_recovery_cluster

ANNOTATION_DRILL = naming.LABEL_PREFIX + "drill"
APP_ROLE = "app"


def build_drill_cluster(
    *,
    source: dict[str, Any],
    drill_id: str,
    tenant: str,
    app: str,
    target: RecoveryTarget,
    plan: str,
    version: str | None,
    config: RenderConfig,
    source_server: str,
    requested: dict[str, Any],
) -> RecoveryManifests:
    addon_id = source["metadata"]["name"]
    name = naming.drill_cluster_name(addon_id, drill_id)
    manifests = _build_recovery_cluster(
        source_cluster=addon_id,
        source_server_name=source_server,
        server_name=naming.incarnation_server_name(name),
        tenant=tenant,
        app=app,
        restore_id=drill_id,
        target=target,
        plan=plan,
        version=version,
        config=config,
        role=naming.ROLE_DRILL,
        name=name,
        extra_labels={naming.LABEL_DRILL_ID: drill_id},
        annotations={ANNOTATION_DRILL: json.dumps(requested, sort_keys=True)},
    )
    spec = manifests.cluster["spec"]
    spec["instances"] = 1
    size = ((source.get("spec") or {}).get("storage") or {}).get("size")
    if size:
        spec["storage"] = {"size": size}
    spec.pop("backup", None)
    spec.pop("plugins", None)
    # On the pods too: the NetworkPolicy that lets the control plane reach a drill's
    # PostgreSQL selects them by it.
    spec["inheritedMetadata"] = {"labels": {naming.LABEL_ROLE: naming.ROLE_DRILL}}
    spec["managed"] = {
        "roles": [{"name": APP_ROLE, "ensure": "present", "login": True, "superuser": True}]
    }
    if manifests.object_store is not None:
        manifests.object_store["metadata"]["labels"][naming.LABEL_DRILL_ID] = drill_id
    return manifests
