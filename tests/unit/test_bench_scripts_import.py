"""Every benchmark script imports: a rename in ``src`` that a script still uses fails here, not on the day someone
runs the benchmark (``bench/atna.py`` imported ``tls_context`` from where it no longer lived and could not start)."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = sorted(path for path in BENCH.glob("*.py") if path.name != "burst.py")  # burst.py runs at import


@pytest.mark.unit
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_bench_script_imports(script: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))  # the scripts import their siblings (pipeline, film_variants ...)
    spec = importlib.util.spec_from_file_location(f"bench_{script.stem}", script)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)  # not run as __main__: only the imports and definitions


@pytest.mark.unit
def test_burst_script_names_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    """burst.py runs its benchmark at import: each name it imports is looked up in its module instead."""
    monkeypatch.syspath_prepend(str(BENCH))
    tree = ast.parse((BENCH / "burst.py").read_text())
    imports = [node for node in tree.body if isinstance(node, ast.ImportFrom) and node.module != "__future__"]
    assert imports
    for node in imports:
        module = importlib.import_module(node.module or "")
        missing = [alias.name for alias in node.names if not hasattr(module, alias.name)]
        assert not missing, f"bench/burst.py imports {missing} from {node.module}"
