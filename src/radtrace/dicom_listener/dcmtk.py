"""dcmtk's command-line peers (storescu, echoscu, storescp) as independent clients and a benchmark peer.

Used by the tests (dcmtk is the real-world client a PACS resembles) and by ``bench/ingest.py``.
``TCP_NODELAY=1`` is always set: without it Debian's dcmtk stalls ~41 ms per C-STORE (Nagle against
delayed ACKs), which would make every comparison unfair.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

__all__ = ["STORESCU_PROPOSE", "dcmtk_env", "echoscu", "storescu"]

#: storescu's option that proposes a given transfer syntax (it proposes one compressed syntax per run).
STORESCU_PROPOSE: Final[dict[str, str]] = {
    str(ImplicitVRLittleEndian): "-xi",
    str(DeflatedExplicitVRLittleEndian): "-xd",
    str(JPEGBaseline8Bit): "-xy",
    str(JPEGExtended12Bit): "-xx",
    str(JPEGLosslessSV1): "-xs",
    str(JPEGLSLossless): "-xt",
    str(JPEGLSNearLossless): "-xu",
    str(JPEG2000Lossless): "-xv",
    str(JPEG2000): "-xw",
    str(RLELossless): "-xr",
}


def dcmtk_env() -> dict[str, str]:
    """The environment for a dcmtk tool: ours plus ``TCP_NODELAY=1``."""
    return {**os.environ, "TCP_NODELAY": "1"}


def storescu(
    files: Sequence[Path],
    port: int,
    *,
    host: str = "127.0.0.1",
    calling: str = "PACS",
    called: str = "RADTRACE",
    options: Sequence[str] = (),
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Send files with dcmtk's storescu (one association); returns the finished process."""
    command = ["storescu", "-aet", calling, "-aec", called, *options, host, str(port), *map(str, files)]
    return subprocess.run(command, env=dcmtk_env(), capture_output=True, text=True, timeout=timeout, check=False)


def echoscu(
    port: int,
    *,
    host: str = "127.0.0.1",
    calling: str = "PACS",
    called: str = "RADTRACE",
    options: Sequence[str] = (),
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """C-ECHO with dcmtk's echoscu; returns the finished process."""
    command = ["echoscu", "-aet", calling, "-aec", called, *options, host, str(port)]
    return subprocess.run(command, env=dcmtk_env(), capture_output=True, text=True, timeout=timeout, check=False)
