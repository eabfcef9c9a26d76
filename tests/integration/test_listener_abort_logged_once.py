"""An association aborted for a protocol violation is one log line, even when one of its threads outlives the grace.

The abort is logged where it is decided ("aborted the association with …"); the watchdog shuts the socket
:data:`~radtrace.dicom_listener.admission.ABORT_GRACE_S` later. Before, when the association's threads had not ended
by then (a C-STORE handler on a slow disk), the watchdog logged it again ("cut off a connection from …", the same
reason), unless whoever aborted it had passed ``logged=True``, which the state machine's guard did not. Now the
watchdog never hears of an abort decided elsewhere: only its own cuts (deadlines) get its line.

Here the C-STORE handler is held (a stand-in for a slow disk) while the peer sends a second A-ASSOCIATE-RQ inside
the association; the test waits until the watchdog has shut the socket (its thread still held) and swept once more,
then lets the handler go.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from dicom_peer_support import RawPeer, associate_rq, fragments, pdu_types, presentation_context, store_rq
from listener_support import listener_settings
from radtrace.dicom_listener.ae import Listener
from radtrace.dicom_listener.dcmtk import echoscu
from radtrace.store.engine import Store
from upper_layer_fuzz_support import FILM, FILM_DATA

pytestmark = pytest.mark.integration


def test_a_violation_while_the_handler_is_held_past_the_grace_is_logged_once(
    tmp_path: Path, store: Store, listener_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    sop_class = str(dcmread(FILM, stop_before_pixels=True).SOPClassUID)
    rq = associate_rq([presentation_context(3, sop_class)])
    listener = Listener(listener_settings(tmp_path, listener_port, min_free_bytes=0), store)
    entered, release = threading.Event(), threading.Event()
    store_handler = listener.handlers.on_store

    def slow_store(event: Any) -> Any:
        entered.set()
        release.wait(60)
        return store_handler(event)

    sweeps = threading.Semaphore(0)
    flush = listener.handlers.flush_refusals

    def counted_flush(**kwargs: Any) -> None:  # the watchdog's on_sweep: called after its turn's log lines
        flush(**kwargs)
        sweeps.release()

    listener.handlers.on_store = slow_store  # type: ignore[method-assign]
    listener.handlers.flush_refusals = counted_flush  # type: ignore[method-assign]
    with listener, caplog.at_level(logging.INFO, logger="radtrace"):
        try:
            with RawPeer(listener_port) as peer:
                peer.send(rq)
                assert pdu_types(peer.read(5, until_types=1)) == [0x02]
                peer.send(fragments(3, store_rq(sop_class, "2.25.41"), 1000, command=True)[0])
                peer.send(*fragments(3, FILM_DATA, 16000, command=False))
                assert entered.wait(30), "the C-STORE handler was not called"
                [connection] = listener.admission.connections
                caplog.clear()
                peer.send(rq)  # an A-ASSOCIATE-RQ inside the association: aborted (AA-8)
                while connection.shut_at is None:  # the watchdog shuts it once the grace is over
                    assert sweeps.acquire(timeout=30), "the watchdog stopped sweeping"
                assert connection.assoc.is_alive()  # its thread outlived the grace: the case that was logged twice
                for _ in range(2):  # the sweep that shut it has ended, and another after it
                    assert sweeps.acquire(timeout=30)
            lines = [
                f"{r.levelname} {r.getMessage()}"
                for r in caplog.records
                if r.name.startswith("radtrace.dicom_listener") and "127.0.0.1" in r.getMessage()
            ]
        finally:
            release.set()
        assert echoscu(listener_port).returncode == 0
    assert len(lines) == 1, lines
    assert "aborted the association with 127.0.0.1: A-ASSOCIATE-RQ inside the association" in lines[0]
