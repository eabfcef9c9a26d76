"""What the JPEG 2000 reader's unit tests share: a codestream as a film's one encapsulated frame under a transfer
syntax, and the pixels OpenJPEG decodes from a codestream (the reference a reading is compared with)."""

from __future__ import annotations

from typing import Any

import numpy as np
import openjpeg
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate


def encapsulated(codestream: bytes, syntax: str) -> Dataset:
    """A data set holding ``codestream`` as its one encapsulated frame, ``syntax`` its transfer syntax (nothing more:
    enough for the reader's source step)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([codestream])
    return ds


def decoded(codestream: bytes) -> np.ndarray[Any, Any]:
    """The pixels OpenJPEG decodes from ``codestream``, as 64-bit integers."""
    return np.asarray(openjpeg.decode(codestream)).astype(np.int64)
