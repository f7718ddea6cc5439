"""In-place switches on Kubernetes: the addon's name moves to the restored Cluster, the
previous Cluster is hibernated (CNPG's ``cnpg.io/hibernation: "on"``: pods go, PVCs stay),
and the addon's connection Service and Secret are pointed at the restored Cluster.

The app binds to the Service ``<addon>`` and the Secret ``<addon>-connection``
(:mod:`paas_pitr.cnpg.connection`), applied with the addon's Cluster from its creation on.
Every Cluster an addon's data can live in has the Secret as its owner's credentials
(``bootstrap.initdb.secret`` for the addon, ``bootstrap.recovery.secret`` for an in-place
restore's Cluster), so a switch changes where the Service leads, never the password.

A switch, once its id is given, is: flip the alias map (one write: from then on the addon
*is* the restored Cluster for every reader), hibernate the previous Cluster, repoint the
Service and Secret, move the addon's ScheduledBackups to the restored Cluster. Each step
is idempotent and decided from what is stored, so a switch repeated after a crash at any
step completes it; one repeated after it completed changes nothing.
"""

from __future__ import annotations

import base64
import copy
import secrets
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from paas_pitr.cnpg import naming
from paas_pitr.cnpg.builders import RenderConfig, build_scheduled_backup
from paas_pitr.cnpg.connection import (
    build_connection_secret,
    build_connection_service,
    connection_secret_name,
)
from paas_pitr.cnpg.history import incarnation_server_name_of
from paas_pitr.engines.base import Manifest
from paas_pitr.engines.kubernetes.aliases import Aliases
from paas_pitr.errors import EngineError
from paas_pitr.restore_views import request_of

if TYPE_CHECKING:
    from paas_pitr.engines.kubernetes.engine import KubernetesEngine

# Generated owner passwords: 32 URL-safe characters (192 bits).
PASSWORD_BYTES = 24
_SERVER_FIELDS = ("managedFields", "resourceVersion", "generation", "uid", "creationTimestamp")


def writable(obj: Manifest) -> Manifest:
    """``obj`` as read, stripped of what only the API server writes (an apply must not
    carry them)."""
    updated = copy.deepcopy(obj)
    updated.pop("status", None)
    for key in _SERVER_FIELDS:
        updated.get("metadata", {}).pop(key, None)
    return updated


def is_addon(cluster: Manifest) -> bool:
    labels = cluster.get("metadata", {}).get("labels") or {}
    return labels.get(naming.LABEL_ROLE) == naming.ROLE_ADDON


def with_owner_secret(cluster: Manifest) -> Manifest:
    """The addon's Cluster, or an in-place restore's, taking the owner's credentials from
    the addon's connection Secret (other Clusters unchanged)."""
    labels = cluster.get("metadata", {}).get("labels") or {}
    addon_id = labels.get(naming.LABEL_ADDON)
    bootstrap = (cluster.get("spec") or {}).get("bootstrap") or {}
    if not addon_id:
        return cluster
    if is_addon(cluster) and (not bootstrap or "initdb" in bootstrap):
        method = "initdb"
    elif (
        labels.get(naming.LABEL_ROLE) == naming.ROLE_RESTORE
        and request_of(cluster).get("target") == "in_place"
        and "recovery" in bootstrap
    ):
        method = "recovery"
    else:
        return cluster
    updated = copy.deepcopy(cluster)
    spec = updated.setdefault("spec", {})
    # CNPG's defaults, spelled out: the database "app" owned by "app".
    entry = spec.setdefault("bootstrap", {}).setdefault(
        method, {"database": "app", "owner": "app"} if method == "initdb" else {}
    )
    entry["secret"] = {"name": connection_secret_name(addon_id)}
    return updated


class Connections:
    """Applies and removes an addon's connection Service and Secret."""

    def __init__(self, engine: KubernetesEngine) -> None:
        self.engine = engine

    async def password(self, addon_id: str, active_cluster: str) -> str:
        """The owner password the Secret holds; without a Secret yet, the one CNPG
        generated for an addon created before paas-pitr rendered Secrets (``<cluster>-app``),
        else a new one."""
        for name in (connection_secret_name(addon_id), f"{active_cluster}-app"):
            stored = await self.engine.api.get("Secret", name)
            encoded = ((stored or {}).get("data") or {}).get("password")
            if encoded:
                return base64.b64decode(encoded).decode()
        return secrets.token_urlsafe(PASSWORD_BYTES)

    async def apply(self, addon: Manifest, active_cluster: str) -> None:
        """Point ``addon``'s Service and Secret at the Kubernetes Cluster ``active_cluster``
        (the Secret first: a Cluster bootstraps its owner from it)."""
        labels = addon["metadata"]["labels"]
        addon_id = labels[naming.LABEL_ADDON]
        config = RenderConfig(namespace=self.engine.settings.namespace)
        common = {
            "tenant": labels[naming.LABEL_TENANT],
            "app": labels[naming.LABEL_APP],
            "addon_id": addon_id,
            "active_cluster": active_cluster,
            "config": config,
        }
        secret = build_connection_secret(
            password=await self.password(addon_id, active_cluster), **common
        )
        # ``data``, not ``stringData``: an apply owns the fields it sends, and the API
        # server stores only ``data``.
        secret["data"] = {
            key: base64.b64encode(value.encode()).decode()
            for key, value in secret.pop("stringData").items()
        }
        await self.engine.api.apply(secret)
        await self.engine.api.apply(build_connection_service(**common))

    async def delete(self, addon_id: str) -> None:
        await self.engine.api.delete("Service", addon_id)
        await self.engine.api.delete("Secret", connection_secret_name(addon_id))


async def switch(
    engine: KubernetesEngine, active: Manifest, kept: Manifest
) -> tuple[float, Aliases]:
    """See :meth:`paas_pitr.switchover.engine.SwitchingEngine.switch_clusters`; returns the
    seconds between the previous Cluster's hibernation and the Service's repointing (what
    the control plane controls of the app's outage; kube-proxy's propagation of the
    Service's endpoints adds to it) and the alias map as switched."""
    aliases = await finish_pending(engine)
    active_name, kept_name = active["metadata"]["name"], kept["metadata"]["name"]
    target = incarnation_server_name_of(active)
    holds_active = aliases.physical(active_name)
    holds_kept = aliases.physical(kept_name)
    if holds_active is None or holds_kept is None:
        raise EngineError(f"no Cluster holds {active_name!r} or {kept_name!r}")
    stored_active = await engine.api.get("Cluster", holds_active)
    stored_kept = await engine.api.get("Cluster", holds_kept)
    if stored_active is None or stored_kept is None:
        raise EngineError(f"the Clusters of {active_name!r} and {kept_name!r} must both exist")
    pending = {"active": writable(active), "kept": writable(kept)}
    if incarnation_server_name_of(stored_active) != target:
        if incarnation_server_name_of(stored_kept) != target:
            raise EngineError(
                f"neither {holds_active!r} nor {holds_kept!r} holds incarnation {target!r}"
            )
        # The switch itself: one write, after which the addon reads as the other Cluster;
        # the Clusters as they must end up go with it, for a restarted process to finish.
        aliases = await engine.aliases.update(
            {active_name: holds_kept, kept_name: holds_active}, pending=pending
        )
    unavailable = await _apply_pending(engine, aliases, pending)
    await engine.aliases.update({}, clear_pending=True)
    holder = aliases.physical(active_name) or active_name
    await _move_schedules(engine, active_name, holder)
    await _move_drill_records(engine, active_name, holder)
    return unavailable, aliases


async def finish_pending(engine: KubernetesEngine) -> Aliases:
    """Finish a switch whose names were flipped by a process killed before it had applied
    both Clusters and repointed the connection (run on start, and before any switch)."""
    aliases = await engine.aliases.load()
    if aliases.pending is None:
        return aliases
    await _apply_pending(engine, aliases, aliases.pending)
    return await engine.aliases.update({}, clear_pending=True)


async def _apply_pending(
    engine: KubernetesEngine, aliases: Aliases, pending: Mapping[str, Manifest]
) -> float:
    active, kept = pending["active"], pending["kept"]
    # The addon's labels first: until then its name leads to a Cluster labelled as the
    # restore's.
    await engine.apply(active)
    began = time.monotonic()
    await engine.apply(kept)  # hibernated: the previous data takes no more writes
    physical = aliases.physical(active["metadata"]["name"]) or active["metadata"]["name"]
    await engine.connections.apply(active, physical)
    return time.monotonic() - began


async def _move_schedules(engine: KubernetesEngine, addon_name: str, destination: str) -> None:
    """The addon's ScheduledBackup backs up (and is owned by) the Cluster the addon now is:
    the hibernated one takes no backups, and its deletion must not take it along. A
    ScheduledBackup's cluster is immutable: it is replaced, rebuilt from the addon's Cluster
    (so a replacement a crash interrupted is finished by the next call)."""
    name = naming.scheduled_backup_name(addon_name)
    current = await engine.api.get("ScheduledBackup", name)
    if current is not None and current["spec"]["cluster"]["name"] == destination:
        return
    addon = await engine.get("Cluster", addon_name)
    if addon is None:
        return
    config = RenderConfig.from_settings(
        engine.settings, mode=await engine.cnpg_mode(), endpoint_url=engine.endpoint_url()
    )
    wanted = build_scheduled_backup(addon, config)
    if current is not None:
        await engine.api.delete("ScheduledBackup", name)
    if wanted is not None:
        await engine.apply(wanted)


async def _move_drill_records(engine: KubernetesEngine, addon_name: str, holder: str) -> None:
    """The addon's drill records (ConfigMap ``<addon>-drills``) are owned by the Cluster the
    addon now is, or the garbage collector would delete them with the kept one."""
    from paas_pitr.drills.store import config_map_name
    from paas_pitr.engines.kubernetes.api import KubeNotFound

    path = f"/api/v1/namespaces/{engine.api.namespace}/configmaps/{config_map_name(addon_name)}"
    try:
        records: Manifest = await engine.api.request("GET", path)
    except KubeNotFound:
        return
    stored = await engine.api.get("Cluster", holder)
    if stored is None:
        return
    uid = stored["metadata"]["uid"]
    owners = records["metadata"].get("ownerReferences") or []
    if [o.get("uid") for o in owners] == [uid]:
        return
    records["metadata"]["ownerReferences"] = [
        {"apiVersion": naming.API_VERSION, "kind": "Cluster", "name": holder, "uid": uid}
    ]
    # With the resourceVersion read: a 409 (a drill wrote meanwhile) is retried by the
    # switch's next call.
    await engine.api.request("PUT", path, body=records)
