"""The Prometheus alert rules and the Grafana dashboards, against the metrics the services export.

Rules go through `promtool` (Debian's `prometheus` package; .ci/run installs it): syntax, and the
unit tests in deploy/prometheus/alerts.test.yml. Every metric a rule or a panel names must be one
that a service's /metrics really exports (read from the services, see tests/support).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from paperwire_shared.streamstats import watched_streams
from tests.support.exported_metrics import exported_series

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))

# PromQL words that are not metric names.
_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left"}
_KEYWORDS |= {"group_right", "offset", "bool", "inf", "nan", "atan2"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels and keywords left out)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges and subqueries
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\$\w+", "", expr)  # Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\()?", expr):
        word, call = match.groups()
        if call or word.lower() in _KEYWORDS or re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


def stream_labels(expr: str) -> set[str]:
    return set(re.findall(r'stream\s*=\s*"([^"]+)"', expr))


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    # The scrape targets Prometheus has, plus what every service exports.
    found = {"up"}
    for names in exported_series(tmp_path_factory.mktemp("services")).values():
        found |= names
    return found


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool is missing: apt-get install prometheus (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return found


def test_the_expression_parser_finds_metrics_and_nothing_else() -> None:
    expr = (
        'sum by (le, handler) (rate(a_seconds_bucket{stream="x.y"}[5m])) / on(job) b_total '
        "offset 1h > 26 * 3600 and max(c) or time() - d[$__rate_interval]"
    )
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c", "d"}


def test_prometheus_config_and_its_alert_rules_pass_promtool(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_alerts_fire_when_their_unit_tests_say_and_stay_quiet_otherwise(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "test", "rules", "alerts.test.yml"],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested() -> None:
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])}
    assert {rule["alert"] for rule in alert_rules()} <= tested


def test_every_alert_names_only_metrics_the_services_export(exported: set[str]) -> None:
    for rule in alert_rules():
        names = metric_names(rule["expr"])
        assert names, f"{rule['alert']} names no metric"
        assert names <= exported, f"{rule['alert']}: {sorted(names - exported)} not exported"


def test_every_alert_says_how_bad_and_what_happened() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_stream_names_in_rules_and_dashboards_are_the_code_streams() -> None:
    exprs = [rule["expr"] for rule in alert_rules()]
    for file in DASHBOARDS:
        for panel in panels(json.loads(file.read_text())):
            exprs.extend(t["expr"] for t in panel.get("targets", []))
    named = set().union(*map(stream_labels, exprs))
    assert named, "no rule or panel names a stream"
    assert named <= set(watched_streams())


def test_there_is_a_dashboard_for_the_pipeline_the_api_delivery_and_quality() -> None:
    assert {file.stem for file in DASHBOARDS} >= {"pipeline", "api", "delivery", "quality"}


def test_dashboards_are_json_with_unique_uids_titles_and_panel_ids() -> None:
    uids, titles = set(), set()
    for file in DASHBOARDS:
        dashboard = json.loads(file.read_text())
        assert dashboard["uid"] not in uids and dashboard["title"] not in titles, file.name
        uids.add(dashboard["uid"])
        titles.add(dashboard["title"])
        ids = [panel["id"] for panel in panels(dashboard)]
        assert len(ids) == len(set(ids)), f"{file.name}: panel ids repeat"


def test_every_panel_queries_the_provisioned_prometheus() -> None:
    sources = [
        source
        for file in (GRAFANA_DIR / "provisioning" / "datasources").glob("*.yml")
        for source in yaml.safe_load(file.read_text())["datasources"]
    ]
    known = {(s["type"], s["uid"]) for s in sources}
    for file in DASHBOARDS:
        for panel in panels(json.loads(file.read_text())):
            if panel["type"] == "row":
                continue
            for item in (panel, *panel["targets"]):
                source = item["datasource"]
                assert (source["type"], source["uid"]) in known, f"{file.name}: {panel['title']}"


def test_every_panel_query_names_metrics_the_services_export(exported: set[str]) -> None:
    for file in DASHBOARDS:
        for panel in panels(json.loads(file.read_text())):
            if panel["type"] == "row":
                continue
            assert panel["targets"], f"{file.name}: {panel['title']} has no query"
            for target in panel["targets"]:
                names = metric_names(target["expr"])
                where = f"{file.name}: {panel['title']}"
                assert names, f"{where} names no metric"
                assert names <= exported, f"{where}: {sorted(names - exported)} not exported"
