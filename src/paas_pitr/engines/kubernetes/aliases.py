"""Which Kubernetes Cluster holds the data a paas-pitr Cluster name stands for.

Everything above the engine names an addon's Cluster after the addon id, and a restore's
after the restore, and an in-place switch exchanges the incarnations those two names stand
for (the local engine swaps data directories). A CNPG Cluster's data never leaves it (its
PVCs and pods are named after it), so on Kubernetes the *names* move instead: after a switch
the name ``<addon>`` stands for the Cluster the restore created, and the restore's name for
the Cluster that was the addon's.

The map of these exchanges (name -> the Cluster that holds its data, only for names that
were switched) is one ConfigMap, ``paas-pitr-cluster-aliases``: flipping both names of a
switch is one write, so every reader sees the addon switched or not switched, never half.
Writes are read-modify-write with the resourceVersion (409 Conflict is retried), so
several replicas may flip different addons at once. The engine translates names at its
edge (:mod:`.engine`): the Cluster's ``metadata.name``, and the ``spec.cluster.name`` and
``cnpg.io/cluster`` label of Backups and ScheduledBackups.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from paas_pitr.cnpg import naming
from paas_pitr.engines.base import Manifest
from paas_pitr.errors import EngineError
from paas_pitr.retry import Backoff

CONFIG_MAP = "paas-pitr-cluster-aliases"
ALIASES_KEY = "aliases.json"
# The Clusters of a switch whose names were flipped, until both are applied and the
# connection repointed: a process killed in between finishes them when it starts again.
PENDING_KEY = "pending-switch.json"
# On a Cluster whose data a switched name stands for: the name it is known by above the
# engine (``kubectl get clusters -L paas-pitr.io/known-as`` shows the exchanges).
LABEL_KNOWN_AS = naming.LABEL_PREFIX + "known-as"
_UPDATE_RETRY = Backoff(initial=0.05, max=1.0, multiplier=2.0, attempts=8, jitter=0.5)
# Fields that say how a Cluster's data was made: they stay with the Cluster holding it when
# a name moves to it (CNPG reads them once, at bootstrap).
DATA_BOUND = ("bootstrap", "externalClusters")


class KubeRequests(Protocol):
    namespace: str

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class Aliases:
    """``name -> Kubernetes Cluster`` for switched names (others stand for themselves)."""

    held_by: Mapping[str, str]
    pending: Mapping[str, Manifest] | None = None
    """``{"active": Cluster, "kept": Cluster}`` of a flipped switch not finished yet."""

    def physical(self, name: str) -> str | None:
        """The Cluster holding ``name``'s data; ``None`` when ``name`` stands for nothing
        (its own Cluster holds another name's data and no Cluster holds its)."""
        if name in self.held_by:
            return self.held_by[name]
        if name in self.known_as:
            return None
        return name

    @property
    def known_as(self) -> dict[str, str]:
        return {physical: name for name, physical in self.held_by.items()}

    def name_of(self, physical: str) -> str:
        return self.known_as.get(physical, physical)

    def logical(self, obj: Manifest) -> Manifest:
        """``obj`` as stored, named as the layers above know it."""
        if not self.held_by and not self.pending:
            return obj
        kind = obj.get("kind")
        if kind == "Cluster":
            name = self.name_of(obj["metadata"]["name"])
            obj["metadata"]["name"] = name
            for manifest in (self.pending or {}).values():
                if manifest["metadata"]["name"] == name:
                    # Flipped, not applied yet: read as it is about to be written.
                    for key in ("labels", "annotations"):
                        obj["metadata"][key] = copy.deepcopy(manifest["metadata"].get(key, {}))
        elif kind in ("Backup", "ScheduledBackup"):
            _rename_cluster_refs(obj, self.name_of)
        return obj

    def physical_obj(self, obj: Manifest, stored: Manifest | None = None) -> Manifest:
        """``obj`` (named as above the engine) as it must be written; ``stored`` is the
        Cluster holding the data (its data-bound fields are kept)."""
        kind = obj.get("kind")
        if kind in ("Backup", "ScheduledBackup"):
            renamed = copy.deepcopy(obj)
            _rename_cluster_refs(renamed, lambda n: self.physical(n) or n)
            return renamed
        if kind != "Cluster":
            return obj
        name = obj["metadata"]["name"]
        physical = self.physical(name) or name
        if physical == name and name not in self.known_as:
            return obj
        renamed = copy.deepcopy(obj)
        renamed["metadata"]["name"] = physical
        labels = renamed["metadata"].setdefault("labels", {})
        labels[LABEL_KNOWN_AS] = name
        spec = renamed.setdefault("spec", {})
        stored_spec = (stored or {}).get("spec") or {}
        for key in DATA_BOUND:
            spec.pop(key, None)
            if key in stored_spec:
                spec[key] = copy.deepcopy(stored_spec[key])
        return renamed

    def selector(self, kind: str, labels: Mapping[str, str] | None) -> dict[str, str] | None:
        if labels is None or kind not in ("Backup", "ScheduledBackup"):
            return dict(labels) if labels is not None else None
        translated = dict(labels)
        cluster = translated.get(naming.CNPG_CLUSTER_LABEL)
        if cluster is not None:
            translated[naming.CNPG_CLUSTER_LABEL] = self.physical(cluster) or cluster
        return translated


def _rename_cluster_refs(obj: Manifest, rename: Any) -> None:
    spec_cluster = (obj.get("spec") or {}).get("cluster") or {}
    if "name" in spec_cluster:
        spec_cluster["name"] = rename(spec_cluster["name"])
    metadata = obj.get("metadata") or {}
    labels = metadata.get("labels") or {}
    if naming.CNPG_CLUSTER_LABEL in labels:
        labels[naming.CNPG_CLUSTER_LABEL] = rename(labels[naming.CNPG_CLUSTER_LABEL])
    for owner in metadata.get("ownerReferences") or []:
        if owner.get("kind") == "Cluster" and "name" in owner:
            owner["name"] = rename(owner["name"])


class AliasStore:
    """Reads and flips the alias map (see the module's docstring)."""

    def __init__(self, api: KubeRequests) -> None:
        self.api = api

    def _path(self, name: str | None = None) -> str:
        path = f"/api/v1/namespaces/{self.api.namespace}/configmaps"
        return f"{path}/{name}" if name else path

    async def _read(self) -> tuple[Manifest | None, dict[str, str], dict[str, Manifest] | None]:
        from paas_pitr.engines.kubernetes.api import KubeNotFound

        try:
            found: Manifest = await self.api.request("GET", self._path(CONFIG_MAP))
        except KubeNotFound:
            return None, {}, None
        data = found.get("data") or {}
        try:
            loaded = json.loads(data.get(ALIASES_KEY) or "{}")
            pending = json.loads(data[PENDING_KEY]) if data.get(PENDING_KEY) else None
        except ValueError as exc:
            raise EngineError(f"ConfigMap {CONFIG_MAP} holds no JSON map: {exc}") from exc
        if not isinstance(loaded, dict) or not isinstance(pending, dict | None):
            raise EngineError(f"ConfigMap {CONFIG_MAP} holds no JSON map")
        return found, {str(k): str(v) for k, v in loaded.items()}, pending

    async def load(self) -> Aliases:
        _, held_by, pending = await self._read()
        return Aliases(held_by, pending)

    async def update(
        self,
        changes: Mapping[str, str | None],
        *,
        pending: Mapping[str, Manifest] | None = None,
        clear_pending: bool = False,
    ) -> Aliases:
        """Set (or, for ``None``, drop) names in one write; a name mapped to itself is
        dropped too. ``pending`` is written in the same write; ``clear_pending`` drops it.
        Returns the map as written."""
        from paas_pitr.engines.kubernetes.api import KubeConflict, KubeNotFound

        attempt = 0
        while True:
            attempt += 1
            found, held_by, stored_pending = await self._read()
            for name, physical in changes.items():
                if physical is None or physical == name:
                    held_by.pop(name, None)
                else:
                    held_by[name] = physical
            data = {ALIASES_KEY: json.dumps(held_by, sort_keys=True, separators=(",", ":"))}
            kept_pending = (
                pending if pending is not None else (None if clear_pending else stored_pending)
            )
            if kept_pending is not None:
                data[PENDING_KEY] = json.dumps(kept_pending, separators=(",", ":"))
            try:
                if found is None:
                    body = {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {
                            "name": CONFIG_MAP,
                            "namespace": self.api.namespace,
                            "labels": {naming.LABEL_MANAGED_BY: naming.MANAGER},
                        },
                        "data": data,
                    }
                    await self.api.request("POST", self._path(), body=body)
                else:
                    found["data"] = data
                    await self.api.request("PUT", self._path(CONFIG_MAP), body=found)
                return Aliases(held_by, kept_pending)
            except (KubeConflict, KubeNotFound) as exc:
                if _UPDATE_RETRY.gives_up_after(attempt):
                    raise EngineError(
                        f"the Cluster alias map kept changing while being written: {exc.message}"
                    ) from exc
                await asyncio.sleep(_UPDATE_RETRY.jittered(attempt))
