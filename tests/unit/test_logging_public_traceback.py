"""Tracebacks are formatted from public pieces, not CPython's private TracebackException._str.

The old formatter rewrote ``TracebackException._str`` (where 3.11-3.13 keep the message): on a Python that keeps
it elsewhere, a peer's newline in an exception message would reach the log raw and could forge a record. Each case
here must hold whatever ``traceback.TracebackException`` does inside.
"""

from __future__ import annotations

import io
import logging
import re
import traceback

import pytest

pytestmark = pytest.mark.unit

FORGED = "2026-12-04 12:00:00,000 INFO    radtrace.dicom_listener: association accepted from TRUSTED"
RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


class _MessageKeptElsewhere(traceback.TracebackException):
    """A TracebackException as a later CPython might write it: the message under another private name."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._message_text = vars(self).pop("_str", "")

    def format_exception_only(self, **kwargs: object):  # type: ignore[no-untyped-def,override]
        yield f"{getattr(self.exc_type, '__qualname__', '?')}: {self._message_text}\n"


def _forged_lines(output: str) -> list[str]:
    return [line for line in output.splitlines()[1:] if RECORD_START.match(line)]


@pytest.mark.parametrize("captured_log", ["text"], indirect=True)
def test_a_peer_newline_in_a_message_is_escaped_whatever_traceback_keeps_inside(
    captured_log: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(traceback, "TracebackException", _MessageKeptElsewhere)
    try:
        raise ValueError(f"RIS answered AE\n{FORGED}")
    except ValueError:
        logging.getLogger("radtrace.reporting.dispatch.mllp").exception("HL7 message not accepted")
    output = captured_log.getvalue()
    assert not _forged_lines(output), output
    assert "ValueError: RIS answered AE\\x0a2026-12-04" in output


@pytest.mark.parametrize("captured_log", ["text"], indirect=True)
def test_groups_syntax_errors_notes_and_broken_messages_stay_one_line_each(captured_log: io.StringIO) -> None:
    class UnprintableError(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    log = logging.getLogger("radtrace.test")
    try:
        group = ExceptionGroup(f"two\n{FORGED}", [KeyError(f"k\n{FORGED}"), UnprintableError()])
        group.add_note(f"note\r{FORGED}")
        raise group
    except ExceptionGroup:
        log.exception("group")
    try:
        compile(f"x = 1 +\n# {FORGED}\n", f"peer\n{FORGED}", "exec")
    except SyntaxError:
        log.exception("syntax")
    try:
        try:
            raise OSError(f"first\n{FORGED}")
        except OSError:
            raise TimeoutError("second") from None
    except TimeoutError:
        log.exception("suppressed context")
    output = captured_log.getvalue()
    records = [line for line in output.splitlines() if RECORD_START.match(line)]
    assert [record.split(": ", 1)[1] for record in records] == ["group", "syntax", "suppressed context"], output
    assert "ExceptionGroup: two\\x0a2026" in output
    assert "KeyError: 'k\\n2026" in output  # KeyError shows the repr: no raw newline either
    assert "UnprintableError: <exception str() failed>" in output
    assert "note\\x0d2026" in output
    assert "SyntaxError:" in output
    assert 'File "peer\\x0a2026' in output
    assert "first" not in output  # `from None` hides the context, as Python's own traceback does
