"""An exception nobody caught (a thread's, the main thread's) is one record of radtrace's log handler: escaped, its
type and where it was raised, no message (a peer's bytes, a data set's repr with a patient's name). Before, Python
printed its traceback raw on stderr, outside the log's escaping: a CR/LF in its message forged a record there."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.unit

FORGED = "2026-12-04 12:00:00,000 CRITICAL radtrace.audit: audit chain verified, no gap"
RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
NAME = "Wintermute^Zelda"

# Each process sets up logging as radtrace's entry points do, then lets an exception go uncaught: its message carries
# a CR/LF and a forged record, and a pydicom data set's repr with the patient's name.
SCRIPT = textwrap.dedent(
    f"""
    import sys, threading
    from pydicom.dataset import Dataset
    from radtrace.logging import configure_logging

    configure_logging(sys.argv[1], "INFO")
    ds = Dataset()
    ds.PatientName = {NAME!r}

    def reader_of_peer_bytes():
        raise ValueError("undecodable PDU\\r\\n{FORGED}\\n" + str(ds))

    if sys.argv[2] == "thread":
        thread = threading.Thread(target=reader_of_peer_bytes, name="pdu-reader")
        thread.start()
        thread.join()
        print("main went on", flush=True)
    else:
        reader_of_peer_bytes()
    """
)


def _run(fmt: str, where: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, fmt, where], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("where", ["thread", "main"])
def test_an_uncaught_exception_is_one_escaped_record_without_its_message(where: str) -> None:
    done = _run("text", where)
    assert NAME not in done.stderr
    assert "Zelda" not in done.stderr
    assert "audit chain verified" not in done.stderr
    assert "\r" not in done.stderr
    records = [line for line in done.stderr.splitlines() if RECORD_START.match(line)]
    assert len(records) == 1, done.stderr
    who = "thread pdu-reader" if where == "thread" else "radtrace"
    level = "ERROR" if where == "thread" else "CRITICAL"
    assert f" {level} " in records[0]
    assert f" radtrace.uncaught: {who} ended on an exception nobody caught: ValueError raised in " in records[0]
    assert "reader_of_peer_bytes (<string>:" in records[0]
    assert done.stderr.rstrip().endswith(
        "ValueError (the exception's message is not logged: it may hold a peer's bytes or patient data)"
    )
    if where == "thread":
        assert done.returncode == 0
        assert done.stdout == "main went on\n"  # the process goes on, as Python's own hook lets it
    else:
        assert done.returncode == 1


@pytest.mark.parametrize("where", ["thread", "main"])
def test_in_json_the_uncaught_exception_is_one_line(where: str) -> None:
    done = _run("json", where)
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    entry = json.loads(lines[0])
    assert entry["logger"] == "radtrace.uncaught"
    assert "ValueError raised in reader_of_peer_bytes" in entry["message"]
    assert NAME not in lines[0]
    assert "audit chain verified" not in lines[0]


def test_an_exception_raised_from_another_names_both_types_and_a_thread_exit_stays_silent() -> None:
    script = textwrap.dedent(
        """
        import sys, threading
        from radtrace.logging import configure_logging

        configure_logging("text", "INFO")

        def chained():
            try:
                {}["Doe^Jane"]
            except KeyError as exc:
                raise RuntimeError("lost Doe^Jane") from exc

        for target in (chained, sys.exit):
            thread = threading.Thread(target=target, name=target.__name__)
            thread.start()
            thread.join()
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert "Doe" not in done.stderr
    records = [line for line in done.stderr.splitlines() if RECORD_START.match(line)]
    assert len(records) == 1, done.stderr
    assert "thread chained ended on an exception nobody caught: RuntimeError raised in chained" in records[0]
    assert records[0].endswith(", after KeyError")


def test_an_exception_ignored_in_a_finalizer_is_one_record_without_the_object_repr() -> None:
    """Before, Python printed 'Exception ignored in: <the object's repr>' and the traceback with its message raw."""
    script = textwrap.dedent(
        f"""
        import gc
        from radtrace.logging import configure_logging

        configure_logging("text", "INFO")

        class PeerBuffer:
            def __repr__(self):
                return "PeerBuffer({NAME})\\r\\n{FORGED}"

            def __del__(self):
                raise OSError("closing {NAME}\\r\\n{FORGED}")

        PeerBuffer()
        gc.collect()
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert NAME not in done.stderr
    assert "audit chain verified" not in done.stderr
    records = [line for line in done.stderr.splitlines() if RECORD_START.match(line)]
    assert len(records) == 1, done.stderr
    assert " WARNING " in records[0]
    assert "an exception ignored in PeerBuffer.__del__: OSError raised in __del__ (<string>:" in records[0]
