"""pynetdicom's WARNING about a peer's non-conformant Affected SOP Instance UID, once per association.

pynetdicom (utils.set_uid) logs ``Non-conformant 'Affected SOP Instance UID' value '<uid>'`` as it decodes each C-STORE
request whose UID breaks PS3.5 9.1 (a leading zero in a component; radtrace then refuses the instance, after the
line): one line per C-STORE, so that a peer filled the
listener's log at the rate it sent. radtrace.logging now lets the first of an association through and counts the
others; the listener logs the count in one line when the association ends. The same for pydicom's ``Invalid value for
VR UI`` (eight per such instance) and the listener's ``quarantined an unusable instance`` (one per instance): a
300-instance association wrote 3,002 lines (612 kB) before, 4 after.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from dicom_peer_support import RawPeer, store_statuses
from upper_layer_fuzz_support import RELEASE_RQ, RQ, film, running_harness, store_steps

pytestmark = pytest.mark.integration

STORES = 5


def test_a_peers_non_conformant_uids_are_one_line_and_a_count_per_association(tmp_path: Path) -> None:
    with running_harness(tmp_path) as harness:
        log = harness.listener.log
        before = len(log.read_text(errors="replace").splitlines())
        uids = [f"1.2.826.0.1.3680043.8.498.07.{n}" for n in range(1, STORES + 1)]  # "07": a leading zero
        with warnings.catch_warnings():  # pydicom's own warning of the invalid UI it is given to write
            warnings.simplefilter("ignore")
            steps = {uid: store_steps(uid, film(uid)) for uid in uids}
        with RawPeer(harness.listener.port) as peer:
            peer.send(RQ)
            peer.read(3, until_types=1)
            for n, uid in enumerate(uids, 1):
                peer.send(*steps[uid])
                peer.read(10, until_types=1 + n)
            statuses = store_statuses(peer.received)
            peer.send(RELEASE_RQ)
            peer.read(3, until_types=2 + STORES)
        assert len(statuses) == STORES  # each answered (refused: radtrace takes no non-conformant SOP Instance UID)
        harness.check("non-conformant UIDs")  # the association has ended: its count is logged
        lines = log.read_text(errors="replace").splitlines()[before:]
    warned = [line for line in lines if "Non-conformant 'Affected SOP Instance UID'" in line]
    assert len(warned) == 1, lines  # 10 before (pynetdicom decodes each request's UID twice)
    counted = [line for line in lines if "pynetdicom's 'Non-conformant ... UID' warnings" in line]
    assert len(counted) == 1, lines
    more = re.search(r": (\d+) more of pynetdicom's", counted[0])
    assert more is not None, counted
    assert int(more.group(1)) >= STORES - 1, counted
    # pydicom's and the listener's own per-instance lines too: the first, then the count (before: 8 x STORES of
    # pydicom's, one quarantine line per instance)
    assert len([line for line in lines if "pydicom: Invalid value for VR UI" in line]) == 1, lines
    assert len([line for line in lines if "quarantined an unusable instance" in line]) == 1, lines
    assert f"and {STORES - 1} more quarantined instances (each in the audit log: instance_quarantined)" in counted[0]
    per_instance = [line for line in lines if "WARNING" in line and "listener stopping" not in line]
    assert len(per_instance) == 4, per_instance  # one line of each kind, and the association's count
