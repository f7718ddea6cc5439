from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from paas_pitr.cli import app
from paas_pitr.cnpg.schema import CrdRegistry

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("mode", ["in-tree", "plugin"])
@pytest.mark.parametrize("plan", ["free", "standard", "pro"])
def test_render_cluster_prints_valid_multi_document_yaml(
    crd_registry: CrdRegistry, mode: str, plan: str
) -> None:
    code, out, err = run(
        "render", "cluster", "--tenant", "acme", "--app", "app-1", "--plan", plan, "--mode", mode
    )
    assert code == 0, err
    documents = list(yaml.safe_load_all(out))
    kinds = [d["kind"] for d in documents]
    assert "Cluster" in kinds
    assert ("ScheduledBackup" in kinds) is (plan != "free")
    assert ("ObjectStore" in kinds) is (mode == "plugin" and plan != "free")
    for document in documents:
        assert crd_registry.errors(document) == []


def test_render_cluster_version_and_validation_flag(crds_dir: Path) -> None:
    code, out, err = run(
        "render",
        "cluster",
        "--tenant",
        "acme",
        "--app",
        "app-1",
        "--plan",
        "pro",
        "--version",
        "17",
        "--crds",
        str(crds_dir),
    )
    assert code == 0, err
    cluster = next(d for d in yaml.safe_load_all(out) if d["kind"] == "Cluster")
    assert cluster["spec"]["imageName"].endswith(":17")


def test_render_recovery(crd_registry: CrdRegistry) -> None:
    code, out, err = run(
        "render",
        "recovery",
        "--source",
        "db-acme-app-1",
        "--tenant",
        "acme",
        "--app",
        "app-1",
        "--timestamp",
        "2026-05-04T15:30:00Z",
        "--mode",
        "in-tree",
        "--restore-id",
        "0bd91f2a",
    )
    assert code == 0, err
    (cluster,) = list(yaml.safe_load_all(out))
    assert cluster["metadata"]["name"] == "db-acme-app-1-r0bd91f2a"
    assert cluster["spec"]["bootstrap"]["recovery"]["recoveryTarget"]["targetTime"] == (
        "2026-05-04 15:30:00.000000+00:00"
    )
    assert crd_registry.errors(cluster) == []


def test_render_gives_every_incarnation_its_own_archive_folder() -> None:
    """Two renders of the same addon (a delete and re-create) never share a server folder."""
    folders = []
    for _ in range(2):
        code, out, err = run(
            "render", "cluster", "--tenant", "acme", "--app", "app-1", "--plan", "pro"
        )
        assert code == 0, err
        cluster = next(d for d in yaml.safe_load_all(out) if d["kind"] == "Cluster")
        folder = cluster["metadata"]["annotations"]["paas-pitr.io/server-name"]
        assert re.fullmatch(r"db-acme-app-1-[0-9a-f]{8}", folder)
        assert cluster["spec"]["plugins"][0]["parameters"]["serverName"] == folder
        folders.append(folder)
    assert folders[0] != folders[1]
    code, out, err = run(
        "render",
        "recovery",
        "--source",
        "db-acme-app-1",
        "--source-server-name",
        folders[0],
        "--tenant",
        "acme",
        "--app",
        "app-1",
        "--timestamp",
        "2026-05-04T15:30:00Z",
        "--mode",
        "in-tree",
        "--restore-id",
        "0bd91f2a",
    )
    assert code == 0, err
    (recovery,) = list(yaml.safe_load_all(out))
    assert recovery["spec"]["externalClusters"][0]["barmanObjectStore"]["serverName"] == folders[0]
    own = recovery["spec"]["backup"]["barmanObjectStore"]["serverName"]
    assert re.fullmatch(r"db-acme-app-1-r0bd91f2a-[0-9a-f]{8}", own)


def test_render_recovery_settings_mode_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAAS_PITR_CNPG_MODE", "plugin")
    code, out, _ = run(
        "render",
        "recovery",
        "--source",
        "db-acme-app-1",
        "--tenant",
        "acme",
        "--app",
        "app-1",
        "--backup-id",
        "20260504T030000",
        "--plan",
        "standard",
    )
    assert code == 0
    assert [d["kind"] for d in yaml.safe_load_all(out)] == ["ObjectStore", "Cluster"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["render", "cluster", "--tenant", "acme", "--app", "app-1", "--plan", "gold"],
            "unknown plan 'gold'",
        ),
        (["render", "cluster", "--tenant", "Acme!", "--app", "app-1", "--plan", "pro"], "DNS-1123"),
        (
            [
                "render",
                "cluster",
                "--tenant",
                "acme",
                "--app",
                "app-1",
                "--plan",
                "pro",
                "--mode",
                "magic",
            ],
            "--mode",
        ),
        (
            [
                "render",
                "recovery",
                "--source",
                "db-acme-app-1",
                "--tenant",
                "acme",
                "--app",
                "app-1",
                "--timestamp",
                "2026-05-04T15:30:00",
            ],
            "no UTC offset",
        ),
        (
            [
                "render",
                "recovery",
                "--source",
                "db-acme-app-1",
                "--tenant",
                "acme",
                "--app",
                "app-1",
                "--timestamp",
                "last tuesday",
            ],
            "not ISO 8601",
        ),
        (
            [
                "render",
                "recovery",
                "--source",
                "db-acme-app-1",
                "--tenant",
                "acme",
                "--app",
                "app-1",
            ],
            "exactly one of --timestamp and --backup-id",
        ),
        (
            [
                "render",
                "cluster",
                "--tenant",
                "globex",
                "--app",
                "app-1",
                "--plan",
                "pro",
                "--addon-id",
                "db-acme-app-1",
            ],
            "they start with 'db-globex-'",
        ),
    ],
)
def test_bad_input_exits_non_zero_with_one_line(args: list[str], needle: str) -> None:
    code, out, err = run(*args)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("paas-pitr: error: ") and needle in lines[0]


def test_bad_setting_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAAS_PITR_BACKUP_SCHEDULE", "0 3 * * *")
    code, _, err = run("render", "cluster", "--tenant", "acme", "--app", "app-1", "--plan", "pro")
    assert code != 0
    assert "exactly 6" in err and len(err.strip().splitlines()) == 1
