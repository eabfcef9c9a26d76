"""A library's own multi-line message template is logged as one clean line; a peer's newline is still escaped.

Seen in the first-hour walk with Redis stopped: every Celery reconnect line read
``consumer: Cannot connect to redis://...: Error 111 ... refused..\\x0aTrying again in 2.00 seconds... (1/100)\\x0a``,
because Celery's ``CONNECTION_ERROR`` template itself holds the newlines and the log filter escapes every control
character of the formatted message (so that a peer cannot forge a record).
"""

from __future__ import annotations

import io
import json
import logging

import pytest
from celery.worker.consumer import consumer

pytestmark = pytest.mark.unit

URI = "redis://127.0.0.1:6399/0"
STEP = "Trying again in 2.00 seconds... (1/100)"


def _messages(output: str) -> list[str]:
    lines = output.splitlines()
    assert lines, "nothing was logged: the test would prove nothing"
    return [json.loads(line)["message"] if line.startswith("{") else line for line in lines]


def test_celerys_reconnect_line_reads_as_one_sentence(captured_log: io.StringIO) -> None:
    refused = ConnectionRefusedError(111, "Connection refused")
    consumer.error(consumer.CONNECTION_ERROR, URI, refused, STEP)  # as Celery's consumer logs it
    (message,) = _messages(captured_log.getvalue())
    assert message.endswith(f"consumer: Cannot connect to {URI}: [Errno 111] Connection refused. {STEP}")
    assert "\\x0a" not in message


def test_a_newline_from_a_peer_is_still_escaped_in_the_template_and_in_a_copy_of_it(
    captured_log: io.StringIO,
) -> None:
    forged = "refused.\n2026-12-04 12:00:00,000 INFO    radtrace.dicom_listener: association accepted"
    consumer.error(consumer.CONNECTION_ERROR, URI, forged, STEP)  # the argument's newline is not the template's
    copy = "".join(list(consumer.CONNECTION_ERROR))  # equal, not the library's constant: a message as any other
    assert copy == consumer.CONNECTION_ERROR
    assert copy is not consumer.CONNECTION_ERROR
    logging.getLogger("celery.worker.consumer.consumer").error(copy, URI, "refused", STEP)
    logging.getLogger("radtrace.dicom_listener").error(consumer.CONNECTION_ERROR, URI, "refused", STEP)  # not its own
    first, second, third = _messages(captured_log.getvalue())
    assert "refused.\\x0a2026-12-04 12:00:00,000 INFO    radtrace.dicom_listener" in first
    assert first.endswith(f"association accepted. {STEP}")
    assert second.endswith(f"refused.\\x0a{STEP}\\x0a")
    assert third.endswith(f"refused.\\x0a{STEP}\\x0a")
