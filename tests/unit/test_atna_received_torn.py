"""The test repository's output (radtrace.testing.atna.Rsyslog.received) when rsyslogd was killed mid-write: its
torn record and the next rsyslogd's first share a line. Reading it raised JSONDecodeError ('Extra data') in a CI run
of test_atna_rsyslog's kill test, whichever messages the forwarder had delivered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from radtrace.testing.atna import Rsyslog

pytestmark = pytest.mark.unit


def _record(seq: int, msg: str) -> str:
    return f'[radtrace@32473 seq="{seq}"]\t{json.dumps(msg)[1:-1]}'


def test_a_record_torn_by_a_kill_is_dropped_and_the_next_one_read(tmp_path: Path) -> None:
    receiver = Rsyslog(tmp_path / "rsyslog", 6514, None)
    whole, torn, after = _record(1, 'first "one"'), _record(2, "x [radtrace@ y " * 40), _record(3, "after\tthe kill")
    receiver.output.write_text(f"{whole}\n{torn[:300]}{after}\n{_record(4, 'last')}\n", encoding="utf-8")

    received = receiver.received()

    assert [(message.seq, message.msg) for message in received] == [
        (1, 'first "one"'),
        (3, "after\tthe kill"),
        (4, "last"),
    ]
