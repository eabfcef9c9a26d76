"""RFC 5424 framing of audit messages, octet counting (RFC 5425), UDP datagrams (RFC 5426), the durable cursor."""

from __future__ import annotations

import re
import socket
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from radtrace.audit.atna.forwarder import Cursor, CursorFile
from radtrace.audit.atna.syslog import SyslogHeader, UdpTransport, frame, octet_counted
from radtrace.errors import ConfigError, PermanentError

pytestmark = pytest.mark.unit

XML = '<AuditMessage a="é"/>'.encode()
# RFC 5424 section 6: HEADER SP STRUCTURED-DATA [SP MSG]
SYSLOG = re.compile(
    rb"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>[!-~]{1,255}) (?P<app>[!-~]{1,48}) (?P<proc>[!-~]{1,128}) "
    rb"(?P<msgid>[!-~]{1,32}) (?P<sd>\[[^\]]*\]) \xef\xbb\xbf(?P<msg>.*)$",
    re.DOTALL,
)


def test_frame_is_rfc5424_with_seq_in_structured_data_and_a_bom() -> None:
    when = datetime(2026, 12, 4, 15, 0, 1, 250000, tzinfo=timezone(timedelta(hours=1)))
    framed = frame(SyslogHeader("ris host\n", procid="77"), XML, seq=9, row_hash="ab12", timestamp=when, failure=False)
    match = SYSLOG.match(framed)
    assert match is not None
    assert match["pri"] == b"85"  # facility 10 (authpriv) * 8 + notice
    assert match["ts"] == b"2026-12-04T14:00:01.250000Z"
    assert match["host"] == b"ris_host_"  # PRINTUSASCII only
    assert (match["app"], match["proc"], match["msgid"]) == (b"radtrace", b"77", b"IHE+RFC-3881")
    assert match["sd"] == b'[radtrace@32473 seq="9" hash="ab12"]'
    assert match["msg"] == XML
    failed = frame(SyslogHeader("h"), XML, seq=1, row_hash="0", timestamp=when.astimezone(UTC), failure=True)
    assert failed.startswith(b"<84>1 ")  # warning


def test_octet_counting_counts_bytes_not_characters() -> None:
    message = "<85>1 - - - - - - é".encode()
    assert octet_counted(message) == str(len(message)).encode() + b" " + message
    assert len(message) == len("<85>1 - - - - - - é") + 1


def test_udp_sends_one_datagram_per_message_and_refuses_oversized_ones() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(5)
        transport = UdpTransport("127.0.0.1", server.getsockname()[1])
        transport.connect()
        try:
            transport.send([b"first", b"second"])
            assert [server.recv(70000), server.recv(70000)] == [b"first", b"second"]
            with pytest.raises(PermanentError, match="UDP"):
                transport.send([b"x" * 70000])
        finally:
            transport.close()
    assert not transport.alive()


def test_cursor_file_round_trips_and_refuses_garbage(tmp_path: Path) -> None:
    cursor = CursorFile(tmp_path / "atna" / "cursor.json")
    assert cursor.read() == Cursor(0, "")
    cursor.write(Cursor(41, "ff"))
    cursor.write(Cursor(42, "ee"))
    assert cursor.read() == Cursor(42, "ee")
    assert [p.name for p in (tmp_path / "atna").iterdir()] == ["cursor.json"]  # no temporary left behind
    cursor.path.write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        cursor.read()


def test_atna_settings_need_a_host_when_enabled_and_a_key_with_the_certificate(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from radtrace.config import AtnaSettings

    assert AtnaSettings().enabled is False  # off by default
    with pytest.raises(ValidationError, match="host is not set"):
        AtnaSettings(enabled=True)
    with pytest.raises(ValidationError, match="go together"):
        AtnaSettings(host="arr.example.org", certificate=tmp_path / "client.pem")


def test_serve_runs_the_forwarder_as_a_child_only_when_atna_is_enabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from radtrace import supervisor
    from radtrace.config import load_settings

    started: list[list[str]] = []

    class Recorder:
        def __init__(self, settings: object, components: list[supervisor.Component], **_: object) -> None:
            started.append([component.name for component in components])

        def run(self) -> int:
            return 0

        def on_incompatible(self, problem: str) -> None:  # the node watch's (radtrace.store.node_watch.NodeWatch)
            raise AssertionError(problem)

    monkeypatch.setattr(supervisor, "Supervisor", Recorder)
    supervisor.run_serve(load_settings(data_dir=tmp_path))
    supervisor.run_serve(load_settings(data_dir=tmp_path, atna={"enabled": True, "host": "arr.example.org"}))
    assert started == [["listener", "worker", "dispatcher", "api"], ["listener", "worker", "dispatcher", "api", "atna"]]
    assert supervisor.serve_components() == supervisor.serve_components()  # the default list is never modified
