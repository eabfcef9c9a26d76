"""``radtrace serve`` supervising its children: waiting for weights, restarting what dies, refusing bad settings."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydicom import dcmread

from radtrace.dicom_listener.dcmtk import storescu
from radtrace.store.engine import Store
from radtrace.store.migrate import head_revision
from radtrace.store.models import Revision, RevisionState, Study
from radtrace.testing.services import free_port
from radtrace.testing.studies import StudySpec, make_study, write_study
from serve_support import RunningServe, alive, running_serve, wait_until

pytestmark = pytest.mark.integration


def serve_env(tmp_path: Path, listener_port: int, **extra: str) -> dict[str, str]:
    return {
        "RADTRACE_DATA_DIR": str(tmp_path / "radtrace"),
        "RADTRACE_LISTENER__HOST": "127.0.0.1",
        "RADTRACE_LISTENER__PORT": str(listener_port),
        "RADTRACE_LISTENER__SETTLE_SECONDS": "0.5",
        "RADTRACE_LISTENER__ALLOWED_CALLERS": json.dumps([{"ae_title": "PACS"}]),
        "RADTRACE_LISTENER__MIN_FREE_BYTES": "0",
        "RADTRACE_API__PORT": str(free_port()),
        "COLUMNS": "200",
    } | extra


def revision_states(env: dict[str, str], study_uid: str) -> list[str]:
    """The states of one study's revisions, read from serve's SQLite database here: ``radtrace status`` (its own
    tests) was a whole CLI process per poll, 2.5 s of CPU each on the 2-core CI machine."""
    store = Store.from_url(f"sqlite:///{Path(env['RADTRACE_DATA_DIR']) / 'radtrace.db'}")
    try:
        with store.session() as session:
            query = sa.select(Revision.state).join(Study).where(Study.study_uid == study_uid).order_by(Revision.number)
            return [RevisionState(state).value for state in session.scalars(query)]
    finally:
        store.dispose()


@dataclass
class ServeWithoutWeights:
    """One ``radtrace serve`` started without model weights, shared by the tests of this module that need no fresh
    one (CI runs a module's tests on one worker, --dist loadfile): a serve start was 15 to 20 s of CPU each."""

    serve: RunningServe
    env: dict[str, str]
    log_file: Path
    listener_port: int
    weights: Path  # where the weights are looked for: a test may make them appear
    drop: Path  # dispatch.file_drop_dir
    studies: Path


@pytest.fixture(scope="module")
def serve_without_weights(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeWithoutWeights]:
    """Stopped at the end with SIGTERM: exit 0 and none of its processes left (asserted)."""
    tmp_path = tmp_path_factory.mktemp("serve")
    listener_port = free_port()
    drop = tmp_path / "drop"
    drop.mkdir()
    weights = tmp_path / "weights"  # not there yet
    env = serve_env(
        tmp_path, listener_port, RADTRACE_MODEL__PATH=str(weights), RADTRACE_MODEL__DEVICE="cpu",
        RADTRACE_MODEL__MAX_NEW_TOKENS="32", RADTRACE_DISPATCH__FILE_DROP_DIR=str(drop),
    )  # fmt: skip
    log_file = tmp_path / "serve.log"
    with running_serve(env, log_file, listener_port=listener_port) as serve:
        yield ServeWithoutWeights(serve, env, log_file, listener_port, weights, drop, tmp_path / "studies")
        assert serve.stop(timeout=30) == 0
        assert [pid for pid in serve.seen if alive(pid)] == []


def _store_study(shared: ServeWithoutWeights, name: str) -> str:
    """Send a study of its own (its Study Instance UID from ``name``) to serve's listener; returns that UID."""
    datasets = make_study(StudySpec(accession=f"ACC-{name}"[:16]))
    files = write_study(datasets, shared.studies / name)
    assert storescu(files, shared.listener_port).returncode == 0
    return str(datasets[0].StudyInstanceUID)


def test_a_child_that_dies_is_restarted_and_the_others_keep_running(
    serve_without_weights: ServeWithoutWeights,
) -> None:
    """First in this module, before the weights appear: the study it stores waits queued and is read before the
    next test's (oldest first), so no reading is in hand when serve stops."""
    shared = serve_without_weights
    started = re.findall(r"started listener \(pid (\d+)\)", shared.log_file.read_text())
    os.kill(int(started[-1]), signal.SIGKILL)
    wait_until(
        lambda: len(re.findall(r"started listener \(pid (\d+)\)", shared.log_file.read_text())) == len(started) + 1,
        20, "the listener restarted", shared.log_file,
    )  # fmt: skip
    assert "listener exited unexpectedly (status -9); restart 1" in shared.log_file.read_text()
    # the restarted listener takes studies again
    wait_until(
        lambda: storescu(write_study(make_study(StudySpec(accession="ACC-RESTART")), shared.studies / "restart"),
                         shared.listener_port).returncode == 0,
        30, "the restarted listener storing a study", shared.log_file,
    )  # fmt: skip
    assert shared.log_file.read_text().count("exited unexpectedly") == 1  # the others kept running


def test_without_weights_studies_wait_queued_and_inference_starts_when_the_weights_appear(
    serve_without_weights: ServeWithoutWeights, tiny_model_dir: Path
) -> None:
    shared = serve_without_weights
    log = shared.log_file.read_text()
    assert f"SQLite created at schema {head_revision()}" in log  # the start-up checks ran and made the database
    assert "inference is waiting for model weights" in log
    assert "RADTRACE_MODEL__PATH" in log
    study_uid = _store_study(shared, "waits")
    wait_until(lambda: revision_states(shared.env, study_uid) == ["queued"], 20, "the study queued", shared.log_file)
    assert "model weights found" not in shared.log_file.read_text()

    shared.weights.symlink_to(tiny_model_dir)

    def reported() -> bool:
        return any(
            dcmread(sr, stop_before_pixels=True).StudyInstanceUID == study_uid for sr in shared.drop.glob("*.dcm")
        )

    # 120 s: the worker's start and model load alone took 39 s at load 14 on the 2-core machine (60 s failed there)
    wait_until(reported, 120, "an SR once the weights appeared", shared.log_file)
    assert "model weights found" in shared.log_file.read_text()


def test_a_child_refusing_its_configuration_stops_serve_with_status_2(tmp_path: Path, listener_port: int) -> None:
    # A port another program holds (listening or only bound) is refused by serve's own checks
    # (test_firsthour_ports_taken); one taken after them, before the listener child binds it, is found by the child,
    # which refuses its configuration: serve stops with status 2 instead of restarting it for ever.
    env = serve_env(tmp_path, listener_port, RADTRACE_MODEL__PATH=str(tmp_path / "no-weights"))
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | env
    with socket.socket() as taken:
        serve = subprocess.Popen([sys.executable, "-m", "radtrace", "serve"], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, env=environment)  # fmt: skip
        try:
            assert serve.stdout is not None
            for line in serve.stdout:  # the start-up table; its last line comes before any child is started
                if line.startswith("└"):
                    break
            taken.bind(("127.0.0.1", listener_port))  # the listener child is still importing (seconds)
            _, stderr = serve.communicate(timeout=90)
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait()
    assert serve.returncode == 2, stderr[-3000:]
    assert f"port {listener_port} is already in use by another program (listener.port" in stderr, stderr[-3000:]
    assert "listener refused its configuration (exit 2); stopping radtrace serve" in stderr
