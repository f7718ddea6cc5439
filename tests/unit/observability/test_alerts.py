from __future__ import annotations

from pathlib import Path

import yaml

from paas_pitr.observability import alerts

MONITORING = Path(__file__).resolve().parents[3] / "deploy" / "monitoring"


def test_shipped_files_are_what_the_module_renders() -> None:
    assert (MONITORING / alerts.RULES_FILE).read_text() == alerts.render(alerts.rule_groups())
    assert (MONITORING / alerts.PROMETHEUS_RULE_FILE).read_text() == alerts.render(
        alerts.prometheus_rule()
    )


def test_thresholds_follow_the_tiers() -> None:
    rules = {r["alert"]: r for g in alerts.rule_groups()["groups"] for r in g["rules"]}
    # No rule for the free tier (no backups); the RPO only where any instant is promised.
    assert sorted(rules) == [
        "PaasPitrAddonMetricsStale",
        "PaasPitrAuditDeliveryStalled",
        "PaasPitrDrillFailed",
        "PaasPitrNoRecentBaseBackupDaily",
        "PaasPitrNoRecentBaseBackupPitr",
        "PaasPitrRestoreFailed",
        "PaasPitrRpoBreachPitr",
        "PaasPitrWalArchivingFailingDaily",
        "PaasPitrWalArchivingFailingPitr",
    ]
    assert rules["PaasPitrNoRecentBaseBackupPitr"]["expr"].endswith("> 93600")  # 26 h
    assert rules["PaasPitrWalArchivingFailingDaily"]["for"] == "5m"
    assert rules["PaasPitrRpoBreachPitr"]["expr"] == (
        "time() - max by (tenant, app, addon, tier) "
        '(paas_pitr_newest_restorable_timestamp_seconds{tier="pitr"}) > '
        "max by (tenant, app, addon, tier) "
        '(paas_pitr_archive_timeout_seconds{tier="pitr"}) + 120'
    )


def test_the_kustomization_ships_the_operator_form() -> None:
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    assert kustomization["resources"] == [alerts.PROMETHEUS_RULE_FILE]
