"""A pynetdicom Storage SCP for tests that answers C-STORE with statuses chosen by the test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.uid import Comprehensive3DSRStorage, ExplicitVRLittleEndian
from pynetdicom import AE, evt

from radtrace.testing.services import free_port


@dataclass
class AnsweringScp:
    """Where the SCP listens; ``statuses`` are answered in order (then success); ``stored`` what succeeded."""

    ae_title: str
    port: int
    statuses: list[int] = field(default_factory=list)
    received: list[Dataset] = field(default_factory=list)
    stored: list[str] = field(default_factory=list)


@contextmanager
def answering_scp(ae_title: str = "FAKEPACS") -> Iterator[AnsweringScp]:
    """Run the SCP on a free local port for the duration of the block (Comprehensive 3D SR only)."""
    scp = AnsweringScp(ae_title, free_port())
    ae = AE(ae_title=ae_title)
    ae.add_supported_context(Comprehensive3DSRStorage, ExplicitVRLittleEndian)

    def handle(event: evt.Event) -> int:
        dataset = event.dataset
        scp.received.append(dataset)
        status = scp.statuses.pop(0) if scp.statuses else 0x0000
        if status == 0x0000 or status >= 0xB000:
            scp.stored.append(str(dataset.SOPInstanceUID))
        return status

    server = ae.start_server(("127.0.0.1", scp.port), block=False, evt_handlers=[(evt.EVT_C_STORE, handle)])
    try:
        yield scp
    finally:
        server.shutdown()
