"""In-place restores: restore into a new cluster, verify it, then switch the addon to it,
keeping the previous cluster (stopped, or hibernated on CNPG) for an undo.

- :mod:`.record`: the state of one in-place restore, kept on its recovery Cluster;
- :mod:`.manifests`: what the two Clusters look like once switched (pure);
- :mod:`.engine`: what an engine must do to switch (:class:`SwitchingEngine`);
- :mod:`.history`: the restorable ranges of the incarnations an addon switched away from;
- :mod:`.service`: the use-case (drive, undo, expire), run by a background loop.
"""
