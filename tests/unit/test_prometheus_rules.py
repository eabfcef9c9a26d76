"""deploy/prometheus/radtrace-rules.yml: the alerts docs/operations.md promises, shipped as a rule file (before, the
expressions lived only in the docs' table and deploy/ had no rule file). promtool is not installed here: this checks
the file's structure as Prometheus reads it, that each expression reads as PromQL tokens with metric names, and that
the docs' table and the file name the same alerts. tests/integration/test_prometheus_rules_metrics.py checks the
metric names against the real processes' /metrics."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from prometheus_rules_support import (
    FUNCTIONS,
    HOST_GROUP,
    OPERATIONS,
    RULES,
    exported_names,
    functions,
    load_rules,
    metric_names,
    tokens,
)

_DURATION = re.compile(r"^(\d+(ms|[smhdwy]))+$")


def _alerts() -> list[dict[str, object]]:
    return [rule for group in load_rules()["groups"] for rule in group["rules"]]


def _slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _table_alerts() -> dict[str, str]:
    """Alert name -> the row of the docs' "Alerts worth paging for" table that names it in backticks."""
    text = OPERATIONS.read_text(encoding="utf-8")
    table = text.split("Alerts worth paging for", 1)[1].split("\n\n", 2)[1]
    named: dict[str, str] = {}
    for row in table.splitlines()[2:]:
        for name in re.findall(r"`(Radtrace[A-Za-z]+)`", row.split("|")[1]):
            named[name] = row
    return named


def test_the_file_has_the_shape_prometheus_reads() -> None:
    document = load_rules()
    assert set(document) == {"groups"}
    assert [group["name"] for group in document["groups"]] == ["radtrace", HOST_GROUP]
    names = []
    for group in document["groups"]:
        assert set(group) == {"name", "rules"}
        for rule in group["rules"]:
            assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"Radtrace[A-Z][A-Za-z]+", rule["alert"])
            assert isinstance(rule["expr"], str)
            assert rule["expr"].strip()
            assert _DURATION.match(rule["for"]), rule["for"]
            assert rule["labels"] == {"severity": rule["labels"]["severity"]}
            assert rule["labels"]["severity"] in {"page", "ticket"}
            assert set(rule["annotations"]) == {"summary", "description", "runbook"}
            assert len(rule["annotations"]["description"]) > 80  # says what to do
            names.append(rule["alert"])
    assert len(names) == len(set(names)), "an alert name is used twice"


def test_each_expression_reads_as_promql_and_selects_metrics() -> None:
    for rule in _alerts():
        expr = str(rule["expr"])
        operators = [text for kind, text in tokens(expr) if kind == "op"]
        assert operators.count("(") == operators.count(")"), expr
        assert functions(expr) <= FUNCTIONS, f"{rule['alert']}: {functions(expr) - FUNCTIONS} is no PromQL function"
        names = metric_names(expr)
        assert names, f"{rule['alert']}: no metric in {expr!r}"
        assert all(name.startswith("radtrace_") or name.startswith("node_") for name in names), names


def test_the_tokenizer_finds_metric_names_and_leaves_labels_functions_and_keywords() -> None:
    expr = (
        'sum by (port, tls) (rate(radtrace_a_total{status="0xA700", reason=~"x|y"}[5m])) > 0 and on (port) '
        'min_over_time(max(radtrace_b{state="pending"})[30m:1m]) unless absent(radtrace_c) or {__name__="radtrace_d"}'
    )
    assert metric_names(expr) == {"radtrace_a_total", "radtrace_b", "radtrace_c", "radtrace_d"}
    assert functions(expr) == {"sum", "rate", "min_over_time", "max", "absent"}
    assert functions("sume(radtrace_a)") - FUNCTIONS == {"sume"}
    with pytest.raises(AssertionError):
        tokens("radtrace_a ? 1")


def test_the_docs_table_names_every_alert_in_the_file_and_no_other() -> None:
    in_file = {str(rule["alert"]) for rule in _alerts()}
    in_table = _table_alerts()
    assert set(in_table) == in_file
    assert "deploy/prometheus/radtrace-rules.yml" in OPERATIONS.read_text(encoding="utf-8")
    # each alert's row names the metrics its expression reads, so the table and the file cannot drift apart
    for rule in _alerts():
        row = in_table[str(rule["alert"])]
        for name in metric_names(str(rule["expr"])):
            assert name in row, f"{rule['alert']}: its row does not name {name}"


def test_every_runbook_link_names_a_section_of_operations_md() -> None:
    anchors = {_slug(line.lstrip("#")) for line in OPERATIONS.read_text(encoding="utf-8").splitlines()
               if line.startswith("#")}  # fmt: skip
    for rule in _alerts():
        path, _, anchor = str(rule["annotations"]["runbook"]).partition("#")  # type: ignore[index]
        assert path == "docs/operations.md"
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor}"


def test_the_rule_file_is_where_deploy_ships_it() -> None:
    assert RULES.is_file()


def test_a_scrape_names_counters_and_histograms_with_and_without_samples() -> None:
    registry = CollectorRegistry()
    Counter("radtrace_x", "unused", ["a"], registry=registry)
    Counter("radtrace_y", "used", registry=registry).inc()
    Histogram("radtrace_h", "unused", ["s"], registry=registry)
    names = exported_names(generate_latest(registry).decode())
    assert {"radtrace_x_total", "radtrace_y_total", "radtrace_h_bucket", "radtrace_h_count"} <= names
    assert "radtrace_x" not in names  # a rule must read radtrace_x_total, as Prometheus stores it
