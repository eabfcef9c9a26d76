"""What `radtrace serve` prints once started: who may send (or the exact setting when nobody may), where the
drafts go, and a command that sends a test study and is admitted by the settings as they are."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from radtrace.config import load_settings
from radtrace.dicom_listener.policy import AssociationRequest, check_association
from radtrace.supervisor import SAMPLE_FILM, next_steps

pytestmark = pytest.mark.unit


def _line(steps: list[str], start: str) -> str:
    return next(step for step in steps if step.startswith(start))


def test_with_no_caller_allowed_it_says_so_and_gives_the_setting(tmp_path: Path) -> None:
    steps = next_steps(load_settings(data_dir=tmp_path / "var"), cwd=tmp_path)
    callers = _line(steps, "Callers allowed")
    assert "NONE" in callers
    value = callers.split("RADTRACE_LISTENER__ALLOWED_CALLERS='", 1)[1].split("'", 1)[0]
    assert load_settings(listener={"allowed_callers": json.loads(value)}).listener.allowed_callers
    assert _line(steps, "Drafts").startswith(f"Drafts (SR, HL7, FHIR) are kept in {tmp_path / 'var' / 'drafts'}")
    assert "nowhere else" in _line(steps, "Delivered to")


def test_the_send_command_it_prints_is_admitted_and_names_the_data_directory(tmp_path: Path) -> None:
    (tmp_path / SAMPLE_FILM).parent.mkdir(parents=True)
    (tmp_path / SAMPLE_FILM).write_bytes(b"")
    settings = load_settings(
        data_dir=tmp_path / "elsewhere",
        listener={"port": 11999, "allowed_callers": [{"ae_title": "RADTRACE-SEND", "host": "127.0.0.1"}]},
        dispatch={"file_drop_dir": tmp_path / "drop"},
    )
    steps = next_steps(settings, cwd=tmp_path)
    send = shlex.split(_line(steps, "Send a test study: ").removeprefix("Send a test study: "))
    assert send[0] == f"RADTRACE_DATA_DIR={tmp_path / 'elsewhere'}"
    assert Path(send[1]).name == "radtrace"  # on PATH, or this environment's script
    assert send[2] == "send"
    options = dict(zip(send[3:-1:2], send[4:-1:2], strict=True))
    assert options["--port"] == "11999"
    assert send[-1] == str(SAMPLE_FILM)
    request = AssociationRequest(options["--calling-ae"], options["--called-ae"], "127.0.0.1", 1, 10**12)
    assert check_association(request, settings.listener) is None
    assert f"file drop {tmp_path / 'drop'}" in _line(steps, "Delivered to")
    assert "drafts show" in _line(steps, "Follow it")


def _tls(tmp_path: Path, **listener: object) -> dict[str, object]:
    for name in ("server.pem", "server.key"):
        (tmp_path / name).write_text("not read here")
    tls = {"enabled": True, "certificate": str(tmp_path / "server.pem"), "private_key": str(tmp_path / "server.key")}
    return {"port": 11999, "tls": tls, **listener}


def test_with_tls_the_send_command_goes_to_the_plain_port_as_a_caller_admitted_there(tmp_path: Path) -> None:
    """radtrace send has no TLS: before, serve printed 'send --port <listener.port>', which a TLS port refuses."""
    callers = [{"ae_title": "PACS", "host": "10.0.0.5"}, {"ae_title": "RADTRACE-SEND", "host": "127.0.0.1"}]
    plain_callers = [{"ae_title": "LOCAL-TEST", "host": "127.0.0.1"}]
    settings = load_settings(
        data_dir=tmp_path / "var",
        listener=_tls(tmp_path, allowed_callers=callers, plain_port=12000, plain_allowed_callers=plain_callers),
    )
    send = shlex.split(_line(next_steps(settings, cwd=tmp_path), "Send a test study: ").split(": ", 1)[1])
    at = send.index("send") + 1
    options = dict(zip(send[at:-1:2], send[at + 1 : -1 : 2], strict=True))
    assert options["--port"] == "12000"
    assert options["--calling-ae"] == "LOCAL-TEST"  # the plain port's own list, not allowed_callers
    request = AssociationRequest(
        options["--calling-ae"], options["--called-ae"], "127.0.0.1", 1, 10**12, plain_port=True
    )
    assert check_association(request, settings.listener) is None


def test_with_tls_and_no_plain_port_it_says_how_to_send_instead(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "var", listener=_tls(tmp_path, accept_unknown_callers=True))
    line = _line(next_steps(settings, cwd=tmp_path), "Send a test study: ")
    assert "--port 11999" not in line
    assert "storescu +tls" in line
    assert "listener.plain_port" in line


def test_the_commands_it_prints_reach_a_postgresql_and_redis_service(tmp_path: Path) -> None:
    """Found serving with RADTRACE_STORE__URL (PostgreSQL) and RADTRACE_BROKER__URL (Redis) in the environment: the
    printed 'radtrace status' carried only RADTRACE_DATA_DIR, and run so in another terminal it answered 'no radtrace
    database at <data dir>/radtrace.db'. Now it carries both URLs, a password masked and said so."""
    store_url = "postgresql+psycopg://radtrace@db.example.org:5432/radtrace"
    broker_url = "redis://:s3cret@redis.example.org:6379/0"
    settings = load_settings(data_dir=tmp_path / "var", store={"url": store_url}, broker={"url": broker_url})
    steps = next_steps(settings, cwd=tmp_path)
    follow = shlex.split(_line(steps, "Follow it: ").removeprefix("Follow it: ").split(";")[0])
    assert follow[:2] == [
        f"RADTRACE_STORE__URL={store_url}",
        "RADTRACE_BROKER__URL=redis://:***@redis.example.org:6379/0",
    ]
    assert Path(follow[2]).name == "radtrace"
    assert follow[3] == "status"
    assert "s3cret" not in "\n".join(steps)
    assert "shown as ***" in _line(steps, "(the database or broker URL's password")
