"""What an engine does to switch an addon between two Clusters."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from paas_pitr.engines.base import Manifest


@runtime_checkable
class SwitchingEngine(Protocol):
    async def switch_clusters(self, switch_id: str, active: Manifest, kept: Manifest) -> float:
        """Make the addon's connection lead to the data of the incarnation ``active`` (the
        addon's Cluster as it must be after the switch) names, store both Clusters as given
        (``kept`` hibernated), and return how long the addon accepted no connection, in
        seconds.

        Idempotent per ``switch_id``: a switch interrupted by a crash is finished by a new
        call with the same id (or by the engine on start), one done is not done twice.
        Raises ``EngineError`` (nothing switched, or the call must be repeated)."""
        ...
