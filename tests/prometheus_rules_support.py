"""Reading deploy/prometheus/radtrace-rules.yml for the tests: the rules, and the metric names a PromQL expression
uses (a small tokenizer, not a PromQL parser: enough to find every series selector's name)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

import yaml

ROOT: Final = Path(__file__).resolve().parents[1]
RULES: Final = ROOT / "deploy" / "prometheus" / "radtrace-rules.yml"
OPERATIONS: Final = ROOT / "docs" / "operations.md"
#: The group of rules over node_exporter's metrics (the host's disk), not radtrace's.
HOST_GROUP: Final = "radtrace-host"

_KEYWORDS: Final = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "inf",
     "nan", "atan2"}
)  # fmt: skip
_TOKEN: Final = re.compile(
    r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<matchers>\{[^}]*\})
    | (?P<range>\[[^\]]*\])
    | (?P<number>(?:\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?:ms|[smhdwy])?(?:\d+(?:ms|[smhdwy]))*)
    | (?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<space>\s+)
    | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>(),@])
    """,
    re.VERBOSE,
)


#: The PromQL functions and aggregations the rules may call (a misspelt one is a name Prometheus refuses).
FUNCTIONS: Final = frozenset(
    {"abs", "absent", "absent_over_time", "avg", "avg_over_time", "ceil", "changes", "clamp_min", "count",
     "count_over_time", "delta", "deriv", "floor", "histogram_quantile", "idelta", "increase", "irate",
     "last_over_time", "max", "max_over_time", "min", "min_over_time", "quantile", "rate", "resets", "round",
     "scalar", "sort", "sum", "sum_over_time", "time", "timestamp", "topk", "vector"}
)  # fmt: skip


def functions(expr: str) -> set[str]:
    """The functions and aggregations ``expr`` calls (a name followed by '(', or by by/without)."""
    seq = tokens(expr)
    return {
        text
        for index, (kind, text) in enumerate(seq)
        if kind == "name"
        and index + 1 < len(seq)
        and seq[index + 1][1] in {"(", "by", "without"}
        and text not in {"by", "without", "on", "ignoring", "group_left", "group_right"}
    }


def load_rules() -> dict[str, Any]:
    return yaml.safe_load(RULES.read_text(encoding="utf-8"))


def tokens(expr: str) -> list[tuple[str, str]]:
    """(kind, text) for each token of ``expr``; an AssertionError at a character no token starts with."""
    found, at = [], 0
    while at < len(expr):
        match = _TOKEN.match(expr, at)
        assert match is not None, f"cannot read {expr[at:]!r} in {expr!r}"
        kind = match.lastgroup or ""
        if kind != "space":
            found.append((kind, match.group(0)))
        at = match.end()
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects: every name that is not a function (followed by '('), a keyword or a
    label list's label (after by/without/on/ignoring/group_left/group_right), plus ``__name__="..."`` matchers."""
    seq = tokens(expr)
    names: set[str] = set()
    in_labels = 0
    for index, (kind, text) in enumerate(seq):
        following = seq[index + 1][1] if index + 1 < len(seq) else ""
        if kind == "matchers":
            names.update(re.findall(r'__name__\s*=\s*"([^"]+)"', text))
        if kind != "name" and kind != "op":
            continue
        if kind == "op":
            if in_labels and text == ")":
                in_labels = 0
            continue
        if text in {"by", "without", "on", "ignoring", "group_left", "group_right"} and following == "(":
            in_labels = 1
            continue
        if in_labels or text.lower() in _KEYWORDS or following in {"(", "by", "without"}:
            continue
        names.add(text)
    return names


def exported_names(exposition: str) -> set[str]:
    """The series names a /metrics page serves: every sample's name, and for each ``# TYPE`` line the names its
    samples take (a labelled counter with no sample yet still has its TYPE line: ``radtrace_x_total counter``)."""
    names: set[str] = set()
    suffixes = {"histogram": ("_bucket", "_count", "_sum", "_created"), "summary": ("_count", "_sum", "_created")}
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(None, 3)
            names.add(name)
            if kind.strip() == "counter":
                base = name.removesuffix("_total")
                names.update({f"{base}_total", f"{base}_created"})
            names.update(name + suffix for suffix in suffixes.get(kind.strip(), ()))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names
