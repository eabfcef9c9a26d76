"""A data set that streams without a pause for longer than ``listener.network_timeout_s`` is not aborted as idle.

pynetdicom restarts its idle timer (the network timeout) when its DUL's read of a PDU returns; the fast path's read
goes on reading a data set's P-DATA-TFs while more are already arriving, and only then returns. A data set streamed
without a pause for longer than the network timeout (a large one at full speed; here each fragment's write is made
slow, a stand-in for a slow disk) was aborted by the association thread as idle, mid-transfer, while its bytes kept
coming. Found by test_listener_recorded_stream_fuzz (a film in 1-byte PDVs, 64 a PDU, network timeout 1 s).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from dicom_peer_support import RELEASE_RQ, RawPeer, pdu_types, store_statuses
from listener_support import listener_settings, running
from radtrace.dicom_listener import data_stream
from radtrace.store.engine import Store
from upper_layer_fuzz_support import RQ, film, store_steps

pytestmark = pytest.mark.integration

NETWORK_TIMEOUT_S = 0.5


def test_a_data_set_streamed_longer_than_the_network_timeout_is_stored(
    tmp_path: Path, store: Store, listener_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    write = data_stream._Stream.write

    def slow_write(self: Any, chunk: memoryview) -> None:
        time.sleep(0.05)  # 66 fragments: some 3 s of streaming, six times the network timeout
        write(self, chunk)

    monkeypatch.setattr(data_stream._Stream, "write", slow_write)
    settings = listener_settings(tmp_path, listener_port, network_timeout_s=NETWORK_TIMEOUT_S, min_free_bytes=0)
    with running(settings, store), RawPeer(listener_port, timeout=30) as peer:
        peer.send(RQ)
        assert pdu_types(peer.read(5, until_types=1)) == [0x02]
        steps = store_steps("2.25.4242", film("2.25.4242"))
        assert len(steps) > 60
        peer.send(*steps)  # at once: the listener always has the next PDU waiting
        peer.read(30, until_types=2)
        assert store_statuses(peer.received) == [0x0000]
        peer.send(RELEASE_RQ)
        peer.read(5, until_types=3)
