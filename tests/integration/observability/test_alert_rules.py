"""The shipped alert rules, judged by Prometheus's own promtool against series scraped from
the running service (real HTTP, both engines; the test plays the CNPG operator).

Two scrapes become promtool input series: the first before a restore fails, the second
after, so ``increase()`` sees the failure as Prometheus would. Timestamp-valued series are
shifted by one constant so that promtool's clock (which starts at 0) stands at the second
scrape's wall time when the alerts are evaluated.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from paas_pitr.observability import alerts
from paas_pitr.settings import Settings
from tests.integration.conftest import RunningApi
from tests.integration.operator_play import OperatorSide, create_addon, fail_restore

REPO = Path(__file__).resolve().parents[3]
RULES = REPO / "deploy" / "monitoring" / alerts.RULES_FILE
PROMTOOL = shutil.which("promtool")
# The first scrape stands for promtool's minutes 0-9, the second for 10-30; alerts are
# evaluated at minute 30, when a 30-minute increase() still spans both.
FIRST_STEPS, SECOND_STEPS, EVAL_MINUTES = 10, 21, 30

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed (Debian package prometheus)"
)


@pytest.fixture
def settings(workdir: Path) -> Settings:
    # Sampled often, so the test waits for the metrics rather than the interval.
    return Settings(
        state_dir=workdir / f"state-{time.monotonic_ns()}",
        cnpg_mode="in-tree",
        metrics_interval_seconds=0.2,
    )


Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: httpx.Client) -> tuple[Series, float]:
    """Every sample of /metrics (but ``_created``), and the wall time of the scrape."""
    response = client.get("/metrics")
    assert response.status_code == 200
    wall = time.time()
    series: Series = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            series[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return series, wall


def selector(name: str, labels: tuple[tuple[str, str], ...]) -> str:
    def quote(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    inner = ",".join(f'{key}="{quote(value)}"' for key, value in labels)
    return f"{name}{{{inner}}}"


def input_series(first: Series, second: Series, shift: float) -> list[dict[str, str]]:
    def value(name: str, raw: float) -> str:
        return repr(raw - shift if name.endswith("_timestamp_seconds") else raw)

    found = []
    for key in sorted(first.keys() | second.keys()):
        name, labels = key
        before = (
            f"{value(name, first[key])}+0x{FIRST_STEPS - 1}"
            if key in first
            else (f"_x{FIRST_STEPS}")
        )
        after = (
            f"{value(name, second[key])}+0x{SECOND_STEPS - 1}"
            if key in second
            else (f"_x{SECOND_STEPS}")
        )
        found.append({"series": selector(name, labels), "values": f"{before} {after}"})
    return found


def filled_annotations(rule: dict[str, Any], labels: dict[str, str]) -> dict[str, str]:
    """The rule's annotations with ``{{ $labels.x }}`` filled in (the only template used)."""
    return {
        key: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
        for key, text in rule["annotations"].items()
    }


def wait_for_metric(client: httpx.Client, pattern: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if re.search(pattern, client.get("/metrics").text, re.MULTILINE):
            return
        time.sleep(0.1)
    raise AssertionError(f"/metrics never matched {pattern!r}")


@needs_promtool
def test_rules_are_valid_and_both_forms_carry_them() -> None:
    assert PROMTOOL is not None
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 9 rules found" in checked.stdout
    operator_form = yaml.safe_load((RULES.parent / alerts.PROMETHEUS_RULE_FILE).read_text())
    assert operator_form["spec"] == yaml.safe_load(RULES.read_text())


@needs_promtool
def test_alerts_fire_on_what_the_service_exports(
    api: RunningApi, engine: OperatorSide, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    with api.client(api.token("acme")) as client:
        healthy = create_addon(
            client,
            engine,
            app="shop",
            plan="pro",
            backups_ending=[now - timedelta(hours=20), now - timedelta(hours=2)],
            archived_at=now - timedelta(seconds=5),
        )
        stale = create_addon(
            client,
            engine,
            app="blog",
            plan="pro",
            backups_ending=[now - timedelta(days=3), now - timedelta(days=2)],
            archived_at=now - timedelta(hours=1),
            failed_backups=2,
        )
        failing = create_addon(
            client,
            engine,
            app="crm",
            plan="standard",
            backups_ending=[now - timedelta(hours=3)],
            archived_at=now - timedelta(minutes=10),
            archiving_error="can't upload: AccessDenied",
        )
        restore = client.post(
            f"/v1/apps/shop/addons/{healthy}/restore",
            json={"timestamp": (now - timedelta(hours=1)).isoformat()},
        )
        assert restore.status_code == 202, restore.text
        cluster_name = restore.json()["data"]["cluster_name"]
        wait_for_metric(client, rf'^paas_pitr_backups_failed\{{.*addon="{stale}".*\}} 2\.0$')
        first, _ = scrape(client)
        fail_restore(engine, cluster_name, "recovery ended before the target was reached")
        wait_for_metric(
            client,
            rf'^paas_pitr_restore_duration_seconds_count\{{.*addon="{healthy}".*'
            r'outcome="failed".*\} 1\.0$',
        )
        second, wall = scrape(client)

    gauges = {
        (n, dict(labels)["addon"]): v
        for (n, labels), v in second.items()
        if "le" not in dict(labels) and dict(labels).get("addon")
    }
    assert gauges[("paas_pitr_wal_archiving_failing", failing)] == 1.0
    assert gauges[("paas_pitr_wal_archiving_failing", healthy)] == 0.0
    assert gauges[("paas_pitr_backups_failed", stale)] == 2.0
    assert gauges[("paas_pitr_archive_timeout_seconds", stale)] == 60.0
    assert 3590 <= gauges[("paas_pitr_wal_archive_lag_seconds", stale)] <= 3700
    # Two scheduled backups 18 hours apart: the pro window spans from the first backup's
    # end (plus the consistency margin) to the newest archived WAL.
    width = gauges[("paas_pitr_recoverability_window_seconds", healthy)]
    assert 20 * 3600 - 10 <= width <= 20 * 3600

    shift = wall - EVAL_MINUTES * 60
    rules = {r["alert"]: r for g in alerts.rule_groups()["groups"] for r in g["rules"]}

    def fired(alert: str, addon: str, app: str, tier: str) -> dict[str, Any]:
        labels = {"tenant": "acme", "app": app, "addon": addon, "tier": tier}
        return {
            "exp_labels": {**labels, "severity": rules[alert]["labels"]["severity"]},
            "exp_annotations": filled_annotations(rules[alert], labels),
        }

    expected = {
        "PaasPitrNoRecentBaseBackupPitr": [
            fired("PaasPitrNoRecentBaseBackupPitr", stale, "blog", "pitr")
        ],
        "PaasPitrRpoBreachPitr": [fired("PaasPitrRpoBreachPitr", stale, "blog", "pitr")],
        "PaasPitrWalArchivingFailingDaily": [
            fired("PaasPitrWalArchivingFailingDaily", failing, "crm", "daily")
        ],
        "PaasPitrRestoreFailed": [fired("PaasPitrRestoreFailed", healthy, "shop", "pitr")],
    }
    assert set(expected) < set(rules)
    test_file = tmp_path / "alerts.test.yaml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(RULES)],
                "evaluation_interval": "1m",
                "tests": [
                    {
                        "interval": "1m",
                        "input_series": input_series(first, second, shift),
                        "alert_rule_test": [
                            {
                                "eval_time": f"{EVAL_MINUTES}m",
                                "alertname": name,
                                "exp_alerts": expected.get(name, []),
                            }
                            for name in rules
                        ],
                    }
                ],
            },
            sort_keys=False,
        ),
        encoding="utf-8",
    )
    assert PROMTOOL is not None
    result = subprocess.run(
        [PROMTOOL, "test", "rules", str(test_file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
