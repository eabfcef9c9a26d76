"""`radtrace send` sends what a newcomer has on disk: compressed films in their own transfer syntax (which
storescu does not propose by default) and old files stored without file meta."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    DigitalXRayImageStorageForPresentation,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
)
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt

from radtrace.testing.services import free_port
from radtrace.testing.studies import ImageSpec, StudySpec, make_study, write_study
from tests_support import radtrace

pytestmark = pytest.mark.integration

FUJI = Path(__file__).parents[1] / "data" / "real-cxr" / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm"


@dataclass
class Received:
    port: int
    syntaxes: dict[str, str] = field(default_factory=dict)  # SOP Instance UID -> transfer syntax


@contextmanager
def storage_scp() -> Iterator[Received]:
    """An SCP that accepts CR and DX in every transfer syntax and notes the one each instance came in."""
    received = Received(free_port())
    ae = AE(ae_title="RADTRACE")
    for sop_class in (ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation):
        ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)

    def handle(event: evt.Event) -> int:
        received.syntaxes[str(event.dataset.SOPInstanceUID)] = str(event.context.transfer_syntax)
        return 0x0000

    server = ae.start_server(("127.0.0.1", received.port), block=False, evt_handlers=[(evt.EVT_C_STORE, handle)])
    try:
        yield received
    finally:
        server.shutdown()


def test_compressed_films_and_files_without_file_meta_are_sent_as_they_are(tmp_path: Path) -> None:
    films = make_study(
        StudySpec(seed=3),
        [
            ImageSpec(view="PA", rows=64, columns=64, transfer_syntax=JPEG2000Lossless),
            ImageSpec(view="LL", rows=64, columns=64, transfer_syntax=JPEGLosslessSV1),
        ],
    )
    paths = write_study(films, tmp_path / "study")
    with storage_scp() as scp:
        result = radtrace("send", "--port", str(scp.port), str(tmp_path / "study"), str(FUJI))
    assert result.returncode == 0, result.stderr
    assert len(paths) == 2
    expected = {str(ds.SOPInstanceUID): str(ds.file_meta.TransferSyntaxUID) for ds in films}
    assert {uid: scp.syntaxes[uid] for uid in expected} == expected  # proposed and sent in its own syntax
    (bare,) = set(scp.syntaxes) - set(expected)
    assert scp.syntaxes[bare] == ImplicitVRLittleEndian  # the old file, in the syntax of its encoding
