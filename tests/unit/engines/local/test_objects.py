"""The object database's revision: it changes with every write of the kind, from this
process or another connection, and with nothing else."""

from __future__ import annotations

from pathlib import Path

from paas_pitr.engines.local.objects import ObjectDatabase


def backup(name: str) -> dict[str, object]:
    return {"apiVersion": "postgresql.cnpg.io/v1", "kind": "Backup", "metadata": {"name": name}}


def test_every_write_of_the_kind_changes_the_revision(tmp_path: Path) -> None:
    db = ObjectDatabase(tmp_path / "objects.sqlite3")
    try:
        seen = [db.revision("Backup")]
        db.put(backup("b1"))
        seen.append(db.revision("Backup"))
        db.update_status("Backup", "b1", {"phase": "completed"})
        seen.append(db.revision("Backup"))
        db.delete("Backup", "b1")
        seen.append(db.revision("Backup"))
        assert len(set(seen)) == 4
        # Reads and other kinds leave it alone.
        db.list("Backup")
        db.get("Backup", "b1")
        cluster = {
            "apiVersion": "postgresql.cnpg.io/v1",
            "kind": "Cluster",
            "metadata": {"name": "c"},
        }
        db.put(cluster)
        assert db.revision("Backup") == seen[-1]
    finally:
        db.close()


def test_a_write_by_another_connection_changes_the_revision(tmp_path: Path) -> None:
    db = ObjectDatabase(tmp_path / "objects.sqlite3")
    other = ObjectDatabase(tmp_path / "objects.sqlite3")
    try:
        db.put(backup("b1"))
        before = db.revision("Backup")
        other.update_status("Backup", "b1", {"phase": "failed"})
        assert db.revision("Backup") != before
        stored = db.get("Backup", "b1")
        assert stored is not None and stored["status"] == {"phase": "failed"}
    finally:
        other.close()
        db.close()
