"""A film under a transfer syntax the installed pydicom does not know is refused naming the syntax, as a
DicomInputError the worker and the console handle.

pydicom 3.0.2 knows neither JPEG XL (1.2.840.10008.1.2.4.110-112, PS3.5 A.4.12) nor Deflated Image Frame
Compression (1.2.840.10008.1.2.8.1, A.4.11), and asking it whether such a UID is encapsulated raised ValueError
("UID is not a transfer syntax") out of display_values, which the worker's prepare_study (it refuses a frontal, and
passes over a lateral, on a DicomInputError alone) did not handle as a refusal. Each case is the canine film of
tests/data/real-cxr: its frame deflated as A.4.11 has it, or (no JPEG XL encoder is installed) behind a JPEG XL
codestream's signature.
"""

from __future__ import annotations

import zlib
from io import BytesIO

import pytest
from pydicom import dcmwrite
from pydicom.encaps import encapsulate
from pydicom.uid import HTJ2K, JPEG2000

from film_variants_support import film
from radtrace.errors import DicomInputError
from radtrace.model.image import display_values
from radtrace.model.study import study_image
from tests_support import as_part10

pytestmark = pytest.mark.unit

#: the syntax, a known one of the same padded length written first, and the frame's encoding
SYNTAXES = {
    "1.2.840.10008.1.2.4.110": (HTJ2K, "jpeg xl"),
    "1.2.840.10008.1.2.4.111": (HTJ2K, "jpeg xl"),
    "1.2.840.10008.1.2.4.112": (HTJ2K, "jpeg xl"),
    "1.2.840.10008.1.2.8.1": (JPEG2000, "deflate"),
}


@pytest.mark.parametrize("syntax", sorted(SYNTAXES))
def test_a_film_under_a_transfer_syntax_pydicom_does_not_know_is_refused_naming_it(syntax: str) -> None:
    ds, stored = film("canine")
    stand_in, encoding = SYNTAXES[syntax]
    frame = stored.astype("u1").tobytes()
    if encoding == "deflate":  # raw deflate (RFC 1951), one fragment a frame
        packer = zlib.compressobj(9, zlib.DEFLATED, -15)
        fragment = packer.compress(frame) + packer.flush()
    else:
        fragment = b"\xff\x0a" + frame  # a JPEG XL codestream's signature
    ds.PixelData = encapsulate([fragment])
    ds["PixelData"].VR = "OB"
    buffer = BytesIO()
    dcmwrite(buffer, as_part10(ds, stand_in), enforce_file_format=True)
    written = buffer.getvalue()
    at = written.index(stand_in.encode())
    patched = (
        written[:at]
        + syntax.encode().ljust(len(stand_in) + len(stand_in) % 2, b"\0")
        + written[at + len(stand_in) + len(stand_in) % 2 :]
    )
    image = study_image(patched).dataset
    assert str(image.file_meta.TransferSyntaxUID) == syntax
    with pytest.raises(DicomInputError) as refused:
        display_values(image)
    assert syntax in refused.value.reason
