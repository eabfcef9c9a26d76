"""A sender cut off by the listener's watchdog mid-transfer is told at once, even when its data had filled the window.

The watchdog shuts a connection past a deadline (here a PDU slower than ``listener.min_transfer_rate_bytes_s``, the
listener slow to read). Before, the shut was an orderly FIN and the association's thread read what was queued before
closing: the kernel kept the closed socket in FIN-WAIT-2 for 60 s, answering the sender's zero-window probes with the
window it had last advertised, 0, and the sender (storescu) waited a minute, told nothing. A stop had the same wait
(fixed in 6373537 for the stop alone); ``Connection.shut`` now resets the connection whoever shuts it.

Over TLS: a plain association is sent an A-ABORT before the shut, and storescu learnt of it that way (mostly: 2 of 9
runs on b7dc74e waited); a TLS one is sent none (only its own thread may write its socket), and storescu waited every
time (4 of 4 runs on b7dc74e).
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from listener_support import listener_settings, running
from radtrace.dicom_listener.admission import Admission, Connection
from radtrace.dicom_listener.dcmtk import dcmtk_env
from radtrace.store.engine import Store
from radtrace.testing.atna import make_pki
from radtrace.testing.studies import ImageSpec, StudySpec, make_image, write_study
from window_support import reads_held_until_shut, window_filled

pytestmark = [pytest.mark.integration, pytest.mark.skipif(shutil.which("storescu") is None, reason="needs dcmtk")]


def test_a_sender_whose_data_filled_the_window_is_told_at_once_when_the_watchdog_cuts_it_off(
    tmp_path: Path,
    sqlite_store: Store,
    listener_port: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The listener reads 2 MB, then stops reading until the watchdog has shut the socket; the watchdog's deadlines
    are held until the sender's data has filled the receive window, then the PDU under way is past its deadline."""
    image = make_image(StudySpec(), ImageSpec(rows=3072, columns=3072, bits_stored=16), 1, 1)
    (path,) = write_study([image], tmp_path / "in")
    full = threading.Event()
    overdue = Admission.overdue
    cuts: list[str | None] = []

    def overdue_once_full(self: Admission, connection: Connection, now: float) -> str | None:
        reason = overdue(self, connection, now) if full.is_set() else None
        if reason is not None:
            cuts.append(reason)
        return reason

    reads_held_until_shut(monkeypatch)  # until the watchdog has shut the socket
    monkeypatch.setattr(Admission, "overdue", overdue_once_full)
    pki = make_pki(tmp_path / "pki")
    tls = {"enabled": True, "certificate": str(pki.server_cert), "private_key": str(pki.server_key),
           "ca_bundle": str(pki.ca), "require_client_certificate": True}  # fmt: skip
    settings = listener_settings(tmp_path, listener_port, pdu_grace_s=0.5, tls=tls)
    with running(settings, sqlite_store) as serving:
        sender = subprocess.Popen(  # dcmtk's default socket timeout, 60 s: as long as the kernel's FIN-WAIT-2
            ["storescu", "-aet", "PACS", "-aec", "RADTRACE", "--max-send-pdu", "16384",
             "+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca), "127.0.0.1",
             str(listener_port), str(path)],
            env=dcmtk_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            window_filled(serving, sender, at_least=1 << 16)
            full.set()  # the watchdog may now cut it off: the PDU under way is far past pdu_grace_s
            output = sender.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            sender.kill()
            pytest.fail(f"the sender was told nothing of the cut-off ({sender.communicate()[0][-300:]})")
        finally:
            if sender.poll() is None:
                sender.kill()
                sender.communicate()
        assert sender.returncode != 0, output  # not told success: it sends the instance again
        assert cuts, "the watchdog cut nothing off"
        assert cuts[0].startswith("PDU slower than"), cuts
        ended_by = time.monotonic() + 30
        while serving.admission.connections:  # its threads have ended (each says what it has to say before)
            assert time.monotonic() < ended_by, "the connection's threads never ended"
            time.sleep(0.05)
    said = [r.getMessage() for r in caplog.records if r.name.startswith("radtrace.dicom_listener.")]
    assert [m for m in said if m.startswith("cut off a connection from 127.0.0.1")], said
    assert said.count("association ended mid-transfer; the partial instance was discarded") == 1, said  # not twice
    # Nothing more of the connection's bytes: once shut, the TLS socket reads the raw records, which were taken for
    # PDUs ('aborted the association with 127.0.0.1: unknown PDU type 0x17').
    assert not [m for m in said if "PDU" in m and not m.startswith("cut off")], said
