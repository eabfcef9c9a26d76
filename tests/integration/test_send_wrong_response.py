"""``radtrace send``: a peer that answers a C-STORE with some other DIMSE message has not stored the file.

Before: pynetdicom's ``send_c_store`` returns the first DIMSE message that arrives, whatever it is, and ``radtrace
send`` took its Status: a peer (or a proxy before it) answering with a C-ECHO-RSP of status 0000, or a C-STORE-RSP to
another message or about another instance, had the file reported ``0x0000`` (report-hostile open 6; f89dc82 closed it
for the PACS dispatcher). Now the check the dispatcher makes (:class:`radtrace.dicom_listener.scu.DimseAnswers`) is
``send``'s too: such a file is not sent, with a note saying what came back. Shown with a hand-made upper-layer peer
and a real film of tests/data.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dicom_peer_support import store_answering_peer
from radtrace.dicom_listener.scu import send_files

pytestmark = pytest.mark.integration

FILM = Path(__file__).parents[1] / "data" / "real-cxr" / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"


@pytest.mark.parametrize("answer", ["echo", "other-message", "other-instance"])
def test_an_answer_that_is_not_the_c_store_rsp_to_the_file_is_not_a_send(answer: str) -> None:
    with store_answering_peer(answer) as port:
        [result] = send_files([FILM], "127.0.0.1", port, called_ae="RAWPEER", timeout_s=5)
    assert result.status is None
    assert not result.ok
    assert result.note.startswith("RAWPEER at 127.0.0.1:")
    assert result.note.endswith("not counted as stored")
    assert {"echo": "C-ECHO-RSP", "other-message": "to message 2", "other-instance": "'1.2.3.4'"}[answer] in result.note


def test_the_c_store_rsp_to_the_file_is_a_send() -> None:
    with store_answering_peer("right") as port:
        [result] = send_files([FILM], "127.0.0.1", port, called_ae="RAWPEER", timeout_s=5)
    assert result.status == 0x0000
    assert result.ok
