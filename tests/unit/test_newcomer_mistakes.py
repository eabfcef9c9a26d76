"""A newcomer's usual mistakes with the ``radtrace`` command: each one a one-line message naming what to change,
a non-zero exit (2 for bad usage or configuration, as the README's exit codes say), and never a traceback."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from radtrace.testing.services import free_port
from tests_support import radtrace

pytestmark = pytest.mark.unit

FILM = Path(__file__).parents[1] / "data" / "real-cxr" / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm"


@contextlib.contextmanager
def held_port() -> Iterator[int]:
    """A local TCP port another program (this test) listens on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        yield held.getsockname()[1]


def _no_traceback(result_stderr: str) -> None:
    assert "Traceback" not in result_stderr, result_stderr


def test_api_on_a_port_another_program_holds_exits_2_naming_the_setting(tmp_path: Path) -> None:
    data = {"RADTRACE_DATA_DIR": str(tmp_path)}
    assert radtrace("db", "upgrade", env=data).returncode == 0
    with held_port() as port:
        result = radtrace("api", env=data | {"RADTRACE_API__PORT": str(port)}, timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"port {port}" in result.stderr
    assert "RADTRACE_API__PORT" in result.stderr
    _no_traceback(result.stderr)


def test_serve_refuses_at_its_checks_when_the_api_port_is_taken(tmp_path: Path) -> None:
    """Before: every child started, then the QA API was restarted with backoff for ever, uvicorn's bind error
    each time and no word of api.port."""
    env = {"RADTRACE_DATA_DIR": str(tmp_path), "RADTRACE_LISTENER__PORT": str(free_port())}
    with held_port() as port:
        result = radtrace("serve", env=env | {"RADTRACE_API__PORT": str(port)}, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "RADTRACE_API__PORT" in result.stdout
    assert "started listener" not in result.stderr
    _no_traceback(result.stderr)


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [("--log-level", "LOUD", "--log-level"), ("--log-format", "xml", "--log-format")],
)
def test_a_bad_logging_option_is_blamed_on_the_option(option: str, value: str, named: str) -> None:
    result = radtrace(option, value, "config", "show")
    assert result.returncode == 2
    assert named in result.stderr
    assert "RADTRACE_LOGGING" not in result.stderr, result.stderr
    _no_traceback(result.stderr)


def test_a_config_file_saved_as_utf16_is_refused_in_one_line(tmp_path: Path) -> None:
    """Windows Notepad's "Unicode" is UTF-16: the file's first bytes are FF FE."""
    config = tmp_path / "site.toml"
    config.write_text('[listener]\nae_title = "RT"\n', encoding="utf-16")
    result = radtrace("--config", str(config), "config", "show")
    assert result.returncode == 2
    assert str(config) in result.stderr
    assert "UTF-8" in result.stderr
    _no_traceback(result.stderr)


def test_send_to_a_host_that_does_not_resolve_names_it() -> None:
    result = radtrace("send", "--host", "pacs.invalid", "--port", str(free_port()), str(FILM))
    assert result.returncode == 2
    assert "pacs.invalid" in result.stderr
    assert "--host" in result.stderr
    _no_traceback(result.stderr)


@pytest.mark.parametrize("option", ["--calling-ae", "--called-ae"])
def test_send_with_an_ae_title_over_16_characters_names_the_option(option: str) -> None:
    result = radtrace("send", "--port", str(free_port()), option, "RADTRACE-SEND-WORKSTATION", str(FILM))
    assert result.returncode == 2
    assert option in result.stderr
    assert "16" in result.stderr
    _no_traceback(result.stderr)


def test_send_to_a_port_nothing_listens_on_says_what_to_check() -> None:
    port = free_port()
    result = radtrace("send", "--port", str(port), "--calling-ae", "RADTRACE-SEND", str(FILM))
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr
    assert "listener.port" in result.stderr
    _no_traceback(result.stderr)


def test_ctrl_c_during_the_start_up_checks_stops_serve_with_nothing_started(tmp_path: Path) -> None:
    """The checks are held at a known point: the vLLM check waits on a server (this test) that accepts and never
    answers. Before, Ctrl-C there ended serve without a word; raised inside a garbage-collector callback (seen at
    1.5 s into a plain serve) it was lost altogether, and serve went on to start every child."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")}
    with socket.create_server(("127.0.0.1", 0)) as vllm:
        vllm.settimeout(60)
        env |= {
            "RADTRACE_DATA_DIR": str(tmp_path), "RADTRACE_LISTENER__PORT": str(free_port()),
            "RADTRACE_API__PORT": str(free_port()), "RADTRACE_MODEL__BACKEND": "vllm",
            "RADTRACE_MODEL__VLLM_URL": f"http://127.0.0.1:{vllm.getsockname()[1]}", "COLUMNS": "200",
        }  # fmt: skip
        process = subprocess.Popen(
            [sys.executable, "-m", "radtrace", "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        try:
            connection, _ = vllm.accept()  # serve is in its checks now, waiting for an answer
            with connection:
                os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole foreground group
                stdout, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
    assert process.returncode == 130, stdout + stderr
    assert "interrupted (Ctrl-C) during the start-up checks; nothing was started" in stderr
    assert "started listener" not in stderr
    _no_traceback(stderr)


def test_serve_warns_at_its_checks_when_the_broker_does_not_answer(tmp_path: Path) -> None:
    """Before, the checks said nothing of an external broker; the only sign of a mistyped broker.url was Celery's
    reconnect lines, after a "what next" that looked like success. The database is the record, so a warning."""
    from radtrace.config import load_settings
    from radtrace.preflight import run_preflight

    url = f"redis://127.0.0.1:{free_port()}/0"
    settings = load_settings(data_dir=tmp_path, broker={"url": url}, model={"backend": "demo", "demo": True})
    (broker,) = [check for check in run_preflight(settings) if check.name == "broker"]
    assert broker.status == "warning"
    assert url in broker.detail
    assert "RADTRACE_BROKER__URL" in broker.detail


def test_a_model_path_that_does_not_exist_is_called_that(tmp_path: Path) -> None:
    """Before: "model.path /x has no config.json" for a path that is not there at all (a typo)."""
    from radtrace.config import load_settings
    from radtrace.preflight import check_model_weights

    check = check_model_weights(load_settings(data_dir=tmp_path, model={"path": tmp_path / "NV-Reason-CXR3B"}))
    assert check.status == "warning"
    assert "does not exist" in check.detail
    assert "RADTRACE_MODEL__PATH" in check.detail


def test_a_model_directory_with_only_a_config_is_not_called_ok(tmp_path: Path, tiny_model_dir: Path) -> None:
    """Before: a model.path holding config.json but no weights or tokenizer was "ok" at serve's checks, and the
    GPU worker then failed to load it on every start, restarted by serve with nothing said at start-up."""
    import shutil

    from radtrace.config import load_settings
    from radtrace.preflight import check_model_weights

    partial = tmp_path / "model"
    partial.mkdir()
    shutil.copy(tiny_model_dir / "config.json", partial / "config.json")
    check = check_model_weights(load_settings(data_dir=tmp_path, model={"path": partial}))
    assert check.status == "warning"
    assert "tokenizer (tokenizer.json or vocab.json)" in check.detail
    assert "weights (model.safetensors" in check.detail
    assert "RADTRACE_MODEL__PATH" in check.detail
    whole = check_model_weights(load_settings(data_dir=tmp_path, model={"path": tiny_model_dir}))
    assert (whole.status, whole.detail) == ("ok", str(tiny_model_dir))


def test_drafts_list_from_the_wrong_folder_says_it_is_not_the_data_directory_in_use(tmp_path: Path) -> None:
    """Before: "no drafts kept under .../var/drafts" and exit 0, as if the service had made none; the other
    read-only commands (status, study show) already refused with exit 1 naming the data directory."""
    result = radtrace("drafts", "list", env={"RADTRACE_DATA_DIR": str(tmp_path / "var")})
    assert result.returncode == 1
    assert f"no radtrace database at {tmp_path / 'var' / 'radtrace.db'}" in result.stderr
    assert "RADTRACE_DATA_DIR" in result.stderr
    assert not (tmp_path / "var").exists()


def test_drafts_list_in_a_data_directory_with_no_drafts_yet_says_so(tmp_path: Path) -> None:
    data = {"RADTRACE_DATA_DIR": str(tmp_path)}
    assert radtrace("db", "upgrade", env=data).returncode == 0
    result = radtrace("drafts", "list", env=data)
    assert result.returncode == 0, result.stderr
    assert f"no drafts kept under {tmp_path / 'drafts'}" in result.stdout


def test_a_config_file_with_a_byte_order_mark_is_named_as_such(tmp_path: Path) -> None:
    """Before: "not valid TOML: Invalid statement (at line 1, column 1)" for a file that looks right in an editor."""
    config = tmp_path / "site.toml"
    config.write_text('[listener]\nae_title = "RT"\n', encoding="utf-8-sig")
    result = radtrace("--config", str(config), "config", "show")
    assert result.returncode == 2
    assert "byte-order mark" in result.stderr
    _no_traceback(result.stderr)


def test_a_gpu_worker_without_weights_names_the_setting_to_give_them(tmp_path: Path) -> None:
    """Before: "model directory /x does not exist" (or "model repository ... is not available locally"), with no
    word of which setting points there."""
    env = {"RADTRACE_DATA_DIR": str(tmp_path), "RADTRACE_MODEL__PATH": str(tmp_path / "NV-Reason-CXR3B")}
    result = radtrace("worker", "--queues", "gpu", env=env, timeout=90)
    assert result.returncode == 1
    assert f"model directory {tmp_path / 'NV-Reason-CXR3B'} does not exist" in result.stderr
    assert "RADTRACE_MODEL__PATH" in result.stderr
    _no_traceback(result.stderr)


def test_user_create_with_no_one_to_type_the_password_says_how_to_give_one(tmp_path: Path) -> None:
    """Before: with no terminal (a script, ssh without -t), 'Aborted.' and exit 1, with no hint."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")}
    result = subprocess.run(
        [sys.executable, "-m", "radtrace", "user", "create", "dr.night", "--role", "radiologist"],
        env=environment | {"RADTRACE_DATA_DIR": str(tmp_path / "var")},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "--generate-password" in result.stderr
    assert "Aborted" not in result.stderr


def test_serve_refuses_a_broker_that_does_not_answer_at_its_start(tmp_path: Path) -> None:
    """Before: a warning in the checks, then serve started and its two workers logged Celery's 'Cannot connect to
    redis://...' every 2 to 10 s (100 tries, then exit and restart). serve is started by hand: a broker.url that
    answers nothing there is a typo or a Redis not started (found by the first-hour exploration)."""
    url = f"redis://:pw-night@127.0.0.1:{free_port()}/0"
    env = {
        "RADTRACE_DATA_DIR": str(tmp_path), "RADTRACE_LISTENER__PORT": str(free_port()),
        "RADTRACE_API__PORT": str(free_port()), "RADTRACE_BROKER__URL": url,
    }  # fmt: skip
    result = radtrace("serve", env=env, timeout=90)
    assert result.returncode == 2, result.stdout + result.stderr
    table = " ".join(result.stdout.split())
    assert "does not answer" in table
    assert "correct broker.url (RADTRACE_BROKER__URL)" in table
    assert "pw-night" not in result.stdout + result.stderr
    assert "start-up checks failed (broker)" in result.stderr
    assert "started listener" not in result.stderr
    _no_traceback(result.stderr)


@pytest.mark.skipif(shutil.which("echoscu") is None, reason="dcmtk is not installed")
def test_listen_below_the_free_space_limit_starts_and_refuses_as_when_running_saying_why(tmp_path: Path) -> None:
    """serve (started by hand) exits 2 on a disk below listener.min_free_bytes. listen exited 1 there, so systemd
    started it again every 5 s for as long as the disk stayed low, the PACS seeing a closed port. Now it starts as it
    runs once the disk is low: bound, each association rejected-transient (temporary congestion) and audited, and
    one line at start names the setting and what it does meanwhile."""
    import time

    from listener_support import audit_payloads, listener_env
    from radtrace.dicom_listener.dcmtk import echoscu
    from radtrace.store.engine import Store

    port = free_port()
    database_url = f"sqlite:///{tmp_path / 'radtrace.db'}"
    env = listener_env(tmp_path, port, database_url) | {"RADTRACE_LISTENER__MIN_FREE_BYTES": str(2**62)}
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | env
    log_file = tmp_path / "listen.log"
    with log_file.open("w") as out:
        listener = subprocess.Popen([sys.executable, "-m", "radtrace", "listen"], env=environment, stdout=out,
                                    stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while "Rejected Transient" not in (echo := echoscu(port)).stderr:
            assert listener.poll() is None, log_file.read_text()
            assert time.monotonic() < deadline, log_file.read_text()
            time.sleep(0.3)
    finally:
        listener.send_signal(signal.SIGTERM)
        listener.wait(timeout=60)
    log = log_file.read_text()
    assert listener.returncode == 0, log
    assert "Temporary Congestion" in echo.stderr, echo.stderr
    [line] = [line for line in log.splitlines() if "start-up check 'free disk space' warning:" in line]
    assert "RADTRACE_LISTENER__MIN_FREE_BYTES" in line, line
    assert "the listener starts and refuses associations (rejected-transient" in line, line
    store = Store.from_url(database_url)
    try:
        reasons = {json.loads(p)["reason"] for p in audit_payloads(store, "association_rejected")}
    finally:
        store.dispose()
    assert "spool disk nearly full" in reasons, reasons
    _no_traceback(log)


def test_a_second_serve_on_the_same_data_directory_names_the_first_before_starting_anything(tmp_path: Path) -> None:
    """A make run still running in another terminal. Before: serve blamed 'another program' for the QA API port,
    or (with other ports) started every child until its listener refused the data directory's lock."""
    from radtrace.testing.abuse import ListenerProcess

    with ListenerProcess(tmp_path / "var", free_port()) as first:
        env = {
            "RADTRACE_DATA_DIR": str(tmp_path / "var"), "RADTRACE_LISTENER__PORT": str(free_port()),
            "RADTRACE_API__PORT": str(free_port()),
        }  # fmt: skip
        result = radtrace("serve", env=env, timeout=90)
    assert result.returncode == 2, result.stdout + result.stderr
    table = " ".join(result.stdout.split())
    assert f"another radtrace listener (pid {first.pid}" in table
    assert "start-up checks failed (DICOM port)" in result.stderr
    assert "started listener" not in result.stderr
    _no_traceback(result.stderr)
