"""A GPU worker gets its drafter ready at start, before its first study (first hour).

Before, the first study after a worker's start waited for the draft process to be spawned, to import the report
builders (highdicom, hl7apy, fhir.resources) and to import what its first build loads lazily (hl7apy's v2.5.1
library, the FHIR models): about 4 s of that study's time to "reported" (bench/first_draft.py). Now the worker's
warm-up starts the draft processes and warms them while the model loads.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.worker.tasks import WorkerRuntime
from worker_support import worker_settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_a_warmed_process_builds_its_first_drafts_without_importing_anything(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        sys.path.insert(0, "tests")
        from reporting_support import reading
        from radtrace.config import load_settings
        from radtrace.testing.studies import make_study
        from radtrace.worker.drafting import DraftJob, _build, headers_only, warm_drafting

        study = make_study()
        job = DraftJob(str(study[0].StudyInstanceUID), 1, reading(study), [headers_only(ds) for ds in study], [])
        settings = load_settings(data_dir=Path(sys.argv[1]))
        warm_drafting()
        before = set(sys.modules)
        built = _build(settings.reporting, Path(sys.argv[1]) / "drafts", job)
        assert built.files, "no drafts built"
        print(" ".join(sorted(set(sys.modules) - before)))
        """
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == []  # before: hl7apy.v2_5_1..., fhir.resources.R4B.* imported by the first build


def test_a_warmed_process_reads_none_of_the_standard_s_tables_on_its_first_build(tmp_path: Path) -> None:
    # highdicom reads the DICOM standard's IOD, module and attribute tables (JSON, 22 MB for the attributes) the first
    # time it checks an SR: ~0.5 s of the first study's drafts after a warm-up that only imported (bench/first_draft.py)
    script = textwrap.dedent(
        """
        import pkgutil, sys
        from pathlib import Path
        sys.path.insert(0, "tests")
        from reporting_support import reading
        from radtrace.config import load_settings
        from radtrace.testing.studies import make_study
        from radtrace.worker.drafting import DraftJob, _build, headers_only, warm_drafting

        study = make_study()
        job = DraftJob(str(study[0].StudyInstanceUID), 1, reading(study), [headers_only(ds) for ds in study], [])
        settings = load_settings(data_dir=Path(sys.argv[1]))
        warm_drafting()
        read, get_data = [], pkgutil.get_data
        pkgutil.get_data = lambda package, resource: read.append(f"{package}/{resource}") or get_data(package, resource)
        assert _build(settings.reporting, Path(sys.argv[1]) / "drafts", job).files, "no drafts built"
        print(" ".join(read))
        """
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert [name for name in done.stdout.split() if "_standard/" in name] == []  # before: the module table's


def test_the_worker_warm_up_starts_its_draft_processes_before_any_study(
    tmp_path: Path, tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'radtrace.db'}"
    store = Store.from_url(url)
    upgrade(store)
    store.dispose()
    wsettings = worker_settings(tmp_path, url, tiny_model_dir, model={"draft_processes": 1})
    runtime = WorkerRuntime(wsettings)
    before = set(multiprocessing.active_children())
    try:
        with caplog.at_level("INFO", logger="radtrace.worker.drafting"):
            runtime.warm()

        spawned = set(multiprocessing.active_children()) - before
        assert len(spawned) == 1  # before: none until the first study's drafts
        assert "draft processes ready: 1 warmed in " in caplog.text
    finally:
        runtime.pipeline.drafter.close()
        runtime.pipeline.store.dispose()
