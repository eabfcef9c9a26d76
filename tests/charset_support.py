"""Headers holding raw text bytes under a declared character set, read back as a received header is."""

from __future__ import annotations

import io
import warnings

from pydicom import dcmread, dcmwrite
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

NAME, DESCRIPTION, CHARSET = 0x00100010, 0x00081030, 0x00080005


def raw_header(charset: str | None, name: bytes, description: bytes | None = None) -> Dataset:
    """A data set holding these raw bytes, written and read back as a received header is (values unconverted)."""
    ds = Dataset()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's, about raw values and terms it would not write itself
        if charset is not None:
            ds.add(DataElement(CHARSET, "CS", charset))
        ds.add(DataElement(NAME, "PN", name))
        if description is not None:
            ds.add(DataElement(DESCRIPTION, "LO", description))
        dcmwrite(buffer, ds, implicit_vr=False, little_endian=True)
        buffer.seek(0)
        return dcmread(buffer, force=True)


def text_of(ds: Dataset, keyword: str = "PatientName") -> str:
    """The element's value as pydicom decodes it ('' when absent)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's, about bytes its codec replaces
        return str(ds.get(keyword, ""))
