"""Names moved by in-place switches, translated at the Kubernetes engine's edge (pure)."""

from __future__ import annotations

from typing import Any

from paas_pitr.cnpg import naming
from paas_pitr.engines.kubernetes.aliases import LABEL_KNOWN_AS, Aliases
from paas_pitr.engines.kubernetes.switching import with_owner_secret

ADDON, FIRST, SECOND = "db-acme-app-1", "db-acme-app-1-r0a1b2c3d", "db-acme-app-1-r4e5f6a7b"


def cluster(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": naming.API_VERSION,
        "kind": "Cluster",
        "metadata": {"name": name, "labels": {naming.LABEL_ROLE: naming.ROLE_ADDON}},
        "spec": spec,
    }


def test_unswitched_names_stand_for_themselves() -> None:
    aliases = Aliases({})
    assert aliases.physical(ADDON) == ADDON
    obj = cluster(ADDON, instances=3)
    assert aliases.physical_obj(obj) is obj
    assert aliases.logical(cluster(ADDON)) == cluster(ADDON)


def test_two_switches_permute_three_names() -> None:
    aliases = Aliases({ADDON: SECOND, SECOND: FIRST, FIRST: ADDON})
    assert [aliases.physical(n) for n in (ADDON, FIRST, SECOND)] == [SECOND, ADDON, FIRST]
    assert aliases.name_of(SECOND) == ADDON
    # Once the first restore's kept Cluster is deleted, its name stands for nothing.
    expired = Aliases({ADDON: SECOND, SECOND: FIRST})
    assert expired.physical(FIRST) is None
    assert expired.physical(ADDON) == SECOND


def test_a_moved_name_is_written_to_the_cluster_holding_its_data() -> None:
    aliases = Aliases({ADDON: FIRST, FIRST: ADDON})
    stored = cluster(FIRST, bootstrap={"recovery": {"source": "origin"}}, externalClusters=[{}])
    written = aliases.physical_obj(
        cluster(ADDON, instances=3, bootstrap={"initdb": {"database": "app"}}), stored
    )
    assert written["metadata"]["name"] == FIRST
    assert written["metadata"]["labels"][LABEL_KNOWN_AS] == ADDON
    assert written["spec"] == {
        "instances": 3,
        "bootstrap": {"recovery": {"source": "origin"}},
        "externalClusters": [{}],
    }
    read = aliases.logical(written)
    assert read["metadata"]["name"] == ADDON


def test_backups_and_schedules_follow_the_moved_name() -> None:
    aliases = Aliases({ADDON: FIRST, FIRST: ADDON})
    backup: dict[str, Any] = {
        "kind": "Backup",
        "metadata": {
            "name": "b",
            "labels": {naming.CNPG_CLUSTER_LABEL: ADDON},
            "ownerReferences": [{"kind": "Cluster", "name": ADDON, "uid": "u"}],
        },
        "spec": {"cluster": {"name": ADDON}},
    }
    written = aliases.physical_obj(backup)
    assert written["spec"]["cluster"]["name"] == FIRST
    assert written["metadata"]["labels"][naming.CNPG_CLUSTER_LABEL] == FIRST
    assert written["metadata"]["ownerReferences"][0]["name"] == FIRST
    assert backup["spec"]["cluster"]["name"] == ADDON  # the caller's object is not changed
    assert aliases.logical(written)["spec"]["cluster"]["name"] == ADDON
    assert aliases.selector("Backup", {naming.CNPG_CLUSTER_LABEL: ADDON}) == {
        naming.CNPG_CLUSTER_LABEL: FIRST
    }
    assert aliases.selector("Cluster", {naming.LABEL_ADDON: ADDON}) == {naming.LABEL_ADDON: ADDON}


def test_a_flipped_switch_reads_as_it_is_about_to_be_written() -> None:
    pending_addon = cluster(ADDON)
    pending_addon["metadata"]["annotations"] = {"paas-pitr.io/server-name": "new"}
    aliases = Aliases({ADDON: FIRST, FIRST: ADDON}, pending={"active": pending_addon})
    stored = cluster(FIRST)
    stored["metadata"]["labels"] = {naming.LABEL_ROLE: naming.ROLE_RESTORE}
    read = aliases.logical(stored)
    assert read["metadata"]["name"] == ADDON
    assert read["metadata"]["labels"] == {naming.LABEL_ROLE: naming.ROLE_ADDON}
    assert read["metadata"]["annotations"] == {"paas-pitr.io/server-name": "new"}


def test_the_owner_password_comes_from_the_connection_secret() -> None:
    addon = cluster(ADDON)
    addon["metadata"]["labels"][naming.LABEL_ADDON] = ADDON
    assert with_owner_secret(addon)["spec"]["bootstrap"] == {
        "initdb": {"database": "app", "owner": "app", "secret": {"name": f"{ADDON}-connection"}}
    }
    assert "bootstrap" not in addon["spec"]
    restore = cluster(FIRST, bootstrap={"recovery": {"source": "origin"}})
    restore["metadata"]["labels"] = {
        naming.LABEL_ROLE: naming.ROLE_RESTORE,
        naming.LABEL_ADDON: ADDON,
    }
    assert with_owner_secret(restore) == restore  # a new_cluster restore keeps CNPG's own
    restore["metadata"]["annotations"] = {
        naming.ANNOTATION_RESTORE_REQUEST: '{"target": "in_place"}'
    }
    assert with_owner_secret(restore)["spec"]["bootstrap"]["recovery"] == {
        "source": "origin",
        "secret": {"name": f"{ADDON}-connection"},
    }
