"""``radtrace listen``, ``worker`` and ``api`` started alone, as the systemd units, compose and Kubernetes start them,
say the start-up warnings and refusals ``serve``'s table says: one log line each (one JSON object with
``--log-format json``, fields check, result and service), and refuse with serve's exit status.

Found by the first-hour exploration: in the multi-node deployment these are the only commands hospital IT runs, and
none of them said a warning: a ``./.env`` whose RADTRACE_* variables were not in effect, a Redis broker that did not
answer; ``api`` ran no start-up check at all. Started by serve (``--started-by-serve``), whose table said the
warnings already, a child says only its failures.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from radtrace.preflight.broker import BROKER_DOWN
from radtrace.testing.services import free_port
from tests_support import radtrace

pytestmark = pytest.mark.unit

DOTENV = "RADTRACE_LISTENER__PORT=11104\n"

#: Each command alone, and the variable of the port it is refused on (held by another program).
COMMANDS = {
    "listener": (["listen"], "RADTRACE_LISTENER__METRICS_PORT"),
    "dispatcher": (["worker", "--queues=dispatch"], "RADTRACE_BROKER__METRICS_PORT"),
    "api": (["api"], "RADTRACE_API__PORT"),
}


@contextmanager
def _held() -> Iterator[int]:
    port = free_port()
    with socket.socket() as other:
        other.bind(("127.0.0.1", port))
        other.listen()
        yield port


def _alone(folder: Path, *args: str, port_variable: str) -> tuple[int, list[dict[str, Any]], str]:
    """The command run in ``folder`` (a ``.env`` beside it, Redis not answering) until it refuses the held port: its
    exit status, its start-up log lines, its last line."""
    (folder / ".env").write_text(DOTENV)
    env = {"RADTRACE_DATA_DIR": str(folder / "var"), "RADTRACE_BROKER__URL": f"redis://127.0.0.1:{free_port()}/0",
           "RADTRACE_API__HOST": "127.0.0.1", "RADTRACE_LISTENER__METRICS_HOST": "127.0.0.1"}  # fmt: skip
    with _held() as port:
        result = radtrace("--log-format", "json", *args, env=env | {port_variable: str(port)}, cwd=folder)
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr, result.stderr
    logged = [json.loads(line) for line in lines[:-1]]  # every line but the refusal is one JSON object
    return result.returncode, [entry for entry in logged if "check" in entry], lines[-1]


@pytest.mark.parametrize("service", list(COMMANDS))
def test_a_command_started_alone_logs_its_warnings_and_refusal(tmp_path: Path, service: str) -> None:
    args, port_variable = COMMANDS[service]
    code, checks, last = _alone(tmp_path, *args, port_variable=port_variable)
    said = {(entry["check"], entry["result"], entry["service"], entry["level"]) for entry in checks}
    assert ("settings", "warning", service, "WARNING") in said
    (dotenv,) = [entry["message"] for entry in checks if entry["check"] == "settings"]
    assert f"{tmp_path / '.env'} sets RADTRACE_LISTENER__PORT, but radtrace does not read .env files" in dotenv
    assert ("broker", "warning", service, "WARNING") in said  # the review console rings the dispatcher too
    (broker,) = [entry["message"] for entry in checks if entry["check"] == "broker"]
    assert broker.endswith(f"; {BROKER_DOWN[service]} (broker.url, RADTRACE_BROKER__URL)")  # in its own words:
    assert service != "api" or "studies are received" not in broker  # before, the api said the listener's
    (refused,) = [entry for entry in checks if entry["result"] == "failed"]
    assert port_variable in refused["message"]
    assert "already in use by another program" in refused["message"]
    assert (refused["level"], refused["service"]) == ("ERROR", service)
    assert "model" not in {entry["check"] for entry in checks}  # no concern of these three
    assert code == 2  # as serve refuses a port another program holds
    assert last.startswith(f"radtrace: {service} not started: start-up checks failed ({refused['check']})")


def test_a_child_of_serve_leaves_the_warnings_to_its_table(tmp_path: Path) -> None:
    code, checks, _last = _alone(tmp_path, "--started-by-serve", "listen", port_variable=COMMANDS["listener"][1])
    assert code == 2
    assert [(entry["check"], entry["result"]) for entry in checks] == [("metrics ports", "failed")]
