"""``radtrace serve`` with one of its ports held by another program: its start-up table says which port, which setting
and that another program holds it, and nothing is started (exit 2).

Found by the first-hour exploration: with the DICOM port held, the table said "DICOM port ok", serve started every
child and printed "what next" (its wait for the listener was answered by the other program), then stopped when the
listener refused; a metrics port held was an OSError traceback in the worker or dispatcher, restarted for ever.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from certificate_support import listener_pki
from radtrace.testing.services import free_port
from tests_support import radtrace, startup_table

pytestmark = pytest.mark.unit


@contextmanager
def _held(port: int, *, listening: bool = True) -> Iterator[None]:
    """Another program holding ``port`` on every interface: listening, or only bound (a client's chosen source port,
    a server between bind and listen); nothing answers there then."""
    with socket.socket() as other:
        other.bind(("0.0.0.0", port))  # noqa: S104 - as a program that took the port would
        if listening:
            other.listen()
        yield


def _listener_tls(directory: Path) -> dict[str, str]:
    pki = listener_pki(directory / "pki")
    return {
        "RADTRACE_LISTENER__TLS__ENABLED": "true", "RADTRACE_LISTENER__TLS__CERTIFICATE": str(pki["server.pem"]),
        "RADTRACE_LISTENER__TLS__PRIVATE_KEY": str(pki["server.key"]),
    }  # fmt: skip


def _refused_for(row: str, env: dict[str, str], port: int, *, listening: bool = True) -> str:
    with _held(port, listening=listening):
        result = radtrace("serve", env=env)
    shown = result.stdout + result.stderr
    assert result.returncode == 2, shown
    assert "Traceback" not in shown
    result_of, detail = startup_table(result.stdout)[row]
    assert result_of == "failed", shown
    assert "what next" not in result.stdout  # serve does not pretend to start
    assert "started" not in result.stderr, shown  # no child
    assert result.stderr.strip().startswith("radtrace: start-up checks failed"), shown
    return detail


def _env(tmp_path: Path, **more: str) -> dict[str, str]:
    return {
        "RADTRACE_DATA_DIR": str(tmp_path / "var"), "RADTRACE_LISTENER__PORT": str(free_port()),
        "RADTRACE_API__PORT": str(free_port()), "RADTRACE_MODEL__BACKEND": "demo", "RADTRACE_MODEL__DEMO": "true",
    } | more  # fmt: skip


@pytest.mark.parametrize("listening", [True, False], ids=["listening", "bound, not listening"])
def test_serve_says_the_dicom_port_is_taken_by_another_program(tmp_path: Path, listening: bool) -> None:
    """Bound without listening, the port answered nobody, so the check said ok; serve started its children and the
    listener stopped with 'cannot listen on …: Address already in use', naming no setting."""
    env = _env(tmp_path)
    port = int(env["RADTRACE_LISTENER__PORT"])
    detail = _refused_for("DICOM port", env, port, listening=listening)
    assert detail == (
        f"port {port} is already in use by another program (listener.port, RADTRACE_LISTENER__PORT): choose a free "
        "port or stop that program"
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_serve_says_the_plain_dicom_port_is_taken_by_another_program(tmp_path: Path) -> None:
    plain = free_port()
    env = _env(tmp_path, RADTRACE_LISTENER__PLAIN_PORT=str(plain)) | _listener_tls(tmp_path)
    detail = _refused_for("DICOM port", env, plain)
    assert detail.startswith(f"port {plain} is already in use by another program (listener.plain_port, "
                             "RADTRACE_LISTENER__PLAIN_PORT)")  # fmt: skip


def test_serve_says_the_api_port_is_taken_by_another_program(tmp_path: Path) -> None:
    env = _env(tmp_path)
    port = int(env["RADTRACE_API__PORT"])
    detail = _refused_for("QA API port", env, port)
    assert detail.startswith(f"port {port} on 127.0.0.1 is already in use by another program (api.port, "
                             "RADTRACE_API__PORT)")  # fmt: skip


@pytest.mark.parametrize(
    ("variable", "offset", "setting"),
    [
        ("RADTRACE_BROKER__METRICS_PORT", 0, "broker.metrics_port (the worker's), RADTRACE_BROKER__METRICS_PORT"),
        ("RADTRACE_BROKER__METRICS_PORT", 1,
         "broker.metrics_port + 1 (the dispatcher's), RADTRACE_BROKER__METRICS_PORT"),
        ("RADTRACE_LISTENER__METRICS_PORT", 0, "listener.metrics_port, RADTRACE_LISTENER__METRICS_PORT"),
    ],
)  # fmt: skip
def test_serve_says_a_metrics_port_is_taken_by_another_program(
    tmp_path: Path, variable: str, offset: int, setting: str
) -> None:
    first = free_port(consecutive=2)
    env = _env(tmp_path, **{variable: str(first)})
    detail = _refused_for("metrics ports", env, first + offset)
    assert detail == (
        f"port {first + offset} on 0.0.0.0 is already in use by another program ({setting}): choose a free port or "
        "stop that program"
    )


def test_serve_lists_the_metrics_ports_it_will_bind_when_they_are_free(tmp_path: Path) -> None:
    first = free_port(consecutive=2)
    env = _env(tmp_path, RADTRACE_BROKER__METRICS_PORT=str(first))
    port = int(env["RADTRACE_API__PORT"])
    with _held(port):  # serve stops after its checks (the API port is taken); the metrics row is what is looked at
        result = radtrace("serve", env=env)
    assert startup_table(result.stdout)["metrics ports"] == ("ok", f"0.0.0.0:{first}, 0.0.0.0:{first + 1}")


@pytest.mark.parametrize(
    ("command", "variable", "setting"),
    [
        (("listen",), "RADTRACE_LISTENER__METRICS_PORT", "listener.metrics_port, RADTRACE_LISTENER__METRICS_PORT"),
        (("worker", "--queues=dispatch"), "RADTRACE_BROKER__METRICS_PORT",
         "broker.metrics_port, RADTRACE_BROKER__METRICS_PORT"),
    ],
)  # fmt: skip
def test_listen_and_worker_name_their_metrics_port_taken_by_another_program(
    tmp_path: Path, command: tuple[str, ...], variable: str, setting: str
) -> None:
    """Run alone (systemd) too: before, listen blamed listener.port and the worker died in an OSError traceback
    (exit 1, so serve restarted it for ever)."""
    port = free_port()
    with _held(port):
        result = radtrace(*command, env=_env(tmp_path, **{variable: str(port)}), timeout=90)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    *logged, last = result.stderr.strip().splitlines()
    assert logged[-1].endswith(  # one log line (journald), as each start-up check a command run alone refuses
        "ERROR   radtrace.cli.startup: start-up check 'metrics ports' failed: "
        f"port {port} on 0.0.0.0 is already in use by another program ({setting}): choose a free port or stop that "
        "program"
    )
    assert last.startswith("radtrace: ")
    assert "not started: start-up checks failed (metrics ports)" in last


def test_listen_names_its_dicom_port_bound_by_another_program(tmp_path: Path) -> None:
    """Run alone (systemd): before, 'listener: cannot listen on 0.0.0.0:P: Address already in use', no setting."""
    env = _env(tmp_path)
    port = int(env["RADTRACE_LISTENER__PORT"])
    with _held(port, listening=False):
        result = radtrace("listen", env=env, timeout=90)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"radtrace: port {port} is already in use by another program (listener.port, RADTRACE_LISTENER__PORT): "
        "choose a free port or stop that program"
    )
