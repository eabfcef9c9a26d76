"""``radtrace send`` names the presentation contexts a listener refused, not a missing listener.

Found trying real films in the shapes senders write them: a CR film converted to the retired Explicit VR Big Endian
(dcmtk's ``dcmconv +tb``) sent with ``radtrace send`` to radtrace's own listener, which does not take that transfer
syntax. The listener answered at once with an A-ASSOCIATE-AC refusing the one context proposed (result 4, transfer
syntaxes not supported); pynetdicom then aborted the association, and ``send`` said "association with RADTRACE at
127.0.0.1:PORT aborted: is a DICOM listener running there? check --host and --port", exit 1: an operator was sent to
look for a listener that was running. Now each file not sent says which SOP class in which transfer syntax the peer
refused, why (its result), and for a refused transfer syntax how to convert the file; the C-STORE table is printed
as for any file not sent. A file sent beside it over the same association that the peer takes is still stored.

Peer: radtrace's own listener (``radtrace listen``); films: the repository's real NIH and Fuji radiographs, the Fuji
one converted by dcmtk.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from radtrace.dicom_listener.scu import send_files
from radtrace.testing.abuse import ListenerProcess
from radtrace.testing.services import free_port
from tests_support import radtrace

pytestmark = pytest.mark.integration

REAL = Path(__file__).resolve().parents[1] / "data" / "real-cxr"
NIH = REAL / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"
FUJI = REAL / "fuji-cr-chest-pa-mono1-10bit-no-filemeta.dcm"


@pytest.fixture(scope="module")
def listener(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ListenerProcess]:
    with ListenerProcess(tmp_path_factory.mktemp("listener") / "var", free_port()) as running:
        yield running


def _big_endian(tmp_path: Path) -> Path:
    if shutil.which("dcmconv") is None:  # pragma: no cover - CI installs dcmtk
        pytest.skip("dcmtk's dcmconv is not installed")
    out = tmp_path / "fuji-big-endian.dcm"
    subprocess.run(["dcmconv", "+tb", str(FUJI), str(out)], check=True, capture_output=True, timeout=60)
    return out


def test_every_context_refused_names_the_transfer_syntax_not_a_missing_listener(
    tmp_path: Path, listener: ListenerProcess
) -> None:
    film = _big_endian(tmp_path)
    done = radtrace(
        "send", "--port", str(listener.port), "--called-ae", "RADTRACE", "--calling-ae", "PACS", str(film),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "is a DICOM listener running" not in done.stderr
    assert "aborted" not in done.stderr
    assert "not sent" in done.stdout  # the C-STORE table, as for any file not sent
    said = " ".join(done.stderr.split())
    assert f"{film}: no accepted presentation context: the peer does not take this transfer syntax" in said
    assert "Computed Radiography Image Storage in Explicit VR Big Endian (A-ASSOCIATE-AC result 4)" in said
    assert "dcmconv +te" in said
    assert "Traceback" not in done.stderr


def test_a_refused_context_beside_an_accepted_one_is_named_and_the_other_stored(
    tmp_path: Path, listener: ListenerProcess
) -> None:
    film = _big_endian(tmp_path)
    results = send_files([film, NIH], "127.0.0.1", listener.port, called_ae="RADTRACE", calling_ae="PACS")
    refused, stored = results
    assert stored.status == 0x0000
    assert refused.status is None
    assert refused.note.startswith("no accepted presentation context: the peer does not take this transfer syntax")
    assert "Explicit VR Big Endian" in refused.note
