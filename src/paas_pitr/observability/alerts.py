"""The alert rules shipped in ``deploy/monitoring/``, built from the tiers' promises.

One source renders both forms: a plain Prometheus rules file and a ``PrometheusRule``
(monitoring.coreos.com/v1) for the Prometheus Operator. ``python -m
paas_pitr.observability.alerts deploy/monitoring`` rewrites them; a unit test fails when
the files and this module disagree.

Every replica of the service exports the same per-addon series, so each rule aggregates
with ``max by (tenant, app, addon, tier)``: one alert per addon, whatever the replica count.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from paas_pitr.plans import TIER_POLICIES

BY_ADDON = "max by (tenant, app, addon, tier)"
# Base backups are scheduled daily; one may run late or be retried for a while before the
# next is due, so an addon is alarming after a day plus this.
BACKUP_MARGIN = timedelta(hours=2)
BACKUP_INTERVAL = timedelta(hours=24)
# The newest restorable instant trails by up to archive_timeout (a segment is switched and
# archived at least that often); this covers the upload and the metrics refresh interval.
RPO_MARGIN = timedelta(minutes=2)
ARCHIVING_FAILING_FOR = "5m"
FAILURE_LOOKBACK = "30m"
AUDIT_STALLED = timedelta(minutes=5)
METRICS_STALE = timedelta(minutes=5)

RULES_FILE = "paas-pitr.rules.yaml"
PROMETHEUS_RULE_FILE = "prometheusrule.yaml"


def _seconds(delta: timedelta) -> int:
    return int(delta.total_seconds())


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:g}h"


def _rule(
    alert: str,
    expr: str,
    *,
    severity: str,
    summary: str,
    description: str,
    for_: str | None = None,
) -> dict[str, Any]:
    rule: dict[str, Any] = {"alert": alert, "expr": expr}
    if for_ is not None:
        rule["for"] = for_
    labels = {"severity": severity}
    rule["labels"] = labels
    rule["annotations"] = {"summary": summary, "description": description}
    return rule


def addon_rules() -> list[dict[str, Any]]:
    """Per tier: backups due daily (26 h without a completed base backup), archiving that
    fails for 5 minutes, and on point-in-time tiers the RPO (newest restorable instant older
    than archive_timeout plus a margin); restores and drills that failed."""
    rules: list[dict[str, Any]] = []
    where = "{{ $labels.tenant }}/{{ $labels.app }}/{{ $labels.addon }}"
    for tier, policy in TIER_POLICIES.items():
        if not policy.has_backups:
            continue
        pick = f'{{tier="{tier.value}"}}'
        if policy.scheduled_base_backups:
            limit = BACKUP_INTERVAL + BACKUP_MARGIN
            rules.append(
                _rule(
                    f"PaasPitrNoRecentBaseBackup{tier.value.capitalize()}",
                    # An addon that never completed one is measured from its creation.
                    f"time() - {BY_ADDON} (paas_pitr_last_base_backup_timestamp_seconds{pick}"
                    f" or paas_pitr_addon_created_timestamp_seconds{pick})"
                    f" > {_seconds(limit)}",
                    severity="critical",
                    summary=f"No completed base backup for {_hours(limit)} ({where})",
                    description="The newest completed base backup of this addon is older "
                    f"than {_hours(limit)} (daily schedule plus {_hours(BACKUP_MARGIN)}): "
                    "restores cannot start from a recent backup. Check the addon's failed "
                    "backups (paas-pitr backups list) and the operator's events.",
                )
            )
        rules.append(
            _rule(
                f"PaasPitrWalArchivingFailing{tier.value.capitalize()}",
                f"{BY_ADDON} (paas_pitr_wal_archiving_failing{pick}) == 1",
                for_=ARCHIVING_FAILING_FOR,
                severity="critical",
                summary=f"WAL archiving failing ({where})",
                description="archive_command has failed for "
                f"{ARCHIVING_FAILING_FOR}: nothing written since is restorable, and "
                "PostgreSQL keeps the WAL on disk until it succeeds. The addon's WAL archive "
                "(paas-pitr backups list) names the error and what to do.",
            )
        )
        if policy.point_in_time:
            rules.append(
                _rule(
                    f"PaasPitrRpoBreach{tier.value.capitalize()}",
                    f"time() - {BY_ADDON} (paas_pitr_newest_restorable_timestamp_seconds{pick})"
                    f" > {BY_ADDON} (paas_pitr_archive_timeout_seconds{pick})"
                    f" + {_seconds(RPO_MARGIN)}",
                    for_="2m",
                    severity="critical",
                    summary=f"Recovery point objective breached ({where})",
                    description="The newest restorable instant is older than archive_timeout "
                    f"plus {_seconds(RPO_MARGIN)}s: a restore now would lose the writes since.",
                )
            )
    for what, metric in (
        ("Restore", "paas_pitr_restore_duration_seconds_count"),
        ("Drill", "paas_pitr_drill_duration_seconds_count"),
    ):
        rules.append(
            _rule(
                f"PaasPitr{what}Failed",
                f'{BY_ADDON} (increase({metric}{{outcome="failed"}}[{FAILURE_LOOKBACK}])) > 0',
                severity="warning",
                summary=f"A {what.lower()} failed ({where})",
                description=f"A {what.lower()} of this addon ended failed in the last "
                f"{FAILURE_LOOKBACK}; its reason and hint are in `paas-pitr restores list`.",
            )
        )
    return rules


def service_rules() -> list[dict[str, Any]]:
    return [
        _rule(
            "PaasPitrAuditDeliveryStalled",
            f"max(paas_pitr_audit_delivery_stalled_seconds) > {_seconds(AUDIT_STALLED)}",
            for_="5m",
            severity="warning",
            summary="Audit events are not reaching the audit database",
            description="Audit events wait in the journal "
            "(paas_pitr_audit_journal_backlog_bytes) without delivery; changes are refused "
            "once the disk fills. /readyz names the database error.",
        ),
        _rule(
            "PaasPitrAddonMetricsStale",
            f"time() - min(paas_pitr_addon_sample_timestamp_seconds) > {_seconds(METRICS_STALE)}",
            for_="5m",
            severity="warning",
            summary="The per-addon metrics are not refreshed",
            description="The service has not read the addons' objects for "
            f"{_hours(METRICS_STALE)}: the other paas-pitr alerts judge stale facts. Its "
            "log says why (engine unreachable).",
        ),
    ]


def rule_groups() -> dict[str, Any]:
    """The ``groups`` document of a Prometheus rules file."""
    return {
        "groups": [
            {"name": "paas-pitr-addons", "rules": addon_rules()},
            {"name": "paas-pitr-service", "rules": service_rules()},
        ]
    }


def prometheus_rule() -> dict[str, Any]:
    """The same groups as a ``PrometheusRule`` object."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "paas-pitr",
            # Beside the control plane (a Prometheus Operator picks rules up by its
            # ruleNamespaceSelector / ruleSelector: label or move it to match yours).
            "namespace": "paas-system",
            "labels": {"app.kubernetes.io/name": "paas-pitr"},
        },
        "spec": rule_groups(),
    }


HEADER = (
    "# Generated by `python -m paas_pitr.observability.alerts deploy/monitoring`: edit "
    "src/paas_pitr/observability/alerts.py,\n# not this file.\n"
)


def render(document: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(document, sort_keys=False, width=100)


def write(directory: Path) -> list[Path]:
    """Write both files into ``directory``; returns their paths."""
    written = []
    for name, document in ((RULES_FILE, rule_groups()), (PROMETHEUS_RULE_FILE, prometheus_rule())):
        path = directory / name
        path.write_text(render(document), encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "deploy/monitoring")):
        print(path)
