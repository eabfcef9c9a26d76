"""What the listener accepts at negotiation: SOP classes and the transfer syntaxes a PACS sends.

Every transfer syntax listed is stored bit for bit as received; nothing here decodes pixel data.
Radiograph classes (CR, DX for presentation and for processing) are always accepted; the other
storage classes a PACS may misroute are accepted (then skipped, with an audit entry) or not offered
at all, as ``listener.non_chest_policy`` says.
"""

from __future__ import annotations

from typing import Final, Literal

from pydicom.uid import (
    JPEG2000,
    ComputedRadiographyImageStorage,
    DeflatedExplicitVRLittleEndian,
    DigitalXRayImageStorageForPresentation,
    DigitalXRayImageStorageForProcessing,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import _STORAGE_CLASSES as _ALL_STORAGE  # the full PS3.4 Annex B table

__all__ = ["RADIOGRAPH_SOP_CLASSES", "TRANSFER_SYNTAXES", "VERIFICATION", "storage_sop_classes", "supported_contexts"]

VERIFICATION: Final = "1.2.840.10008.1.1"

#: The IODs the model reads (PS3.3 A.2 and A.26).
RADIOGRAPH_SOP_CLASSES: Final = frozenset(
    {
        str(ComputedRadiographyImageStorage),
        str(DigitalXRayImageStorageForPresentation),
        str(DigitalXRayImageStorageForProcessing),
    }
)

#: Uncompressed, deflate, JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE (PS3.5 Annex A).
TRANSFER_SYNTAXES: Final[tuple[str, ...]] = (
    str(ExplicitVRLittleEndian),
    str(ImplicitVRLittleEndian),
    str(DeflatedExplicitVRLittleEndian),
    str(JPEGBaseline8Bit),
    str(JPEGExtended12Bit),
    str(JPEGLossless),
    str(JPEGLosslessSV1),
    str(JPEGLSLossless),
    str(JPEGLSNearLossless),
    str(JPEG2000Lossless),
    str(JPEG2000),
    str(RLELossless),
)


def storage_sop_classes(non_chest_policy: Literal["accept-and-skip", "reject"]) -> list[str]:
    """The storage SOP classes offered: radiographs only, or every storage class pynetdicom knows."""
    if non_chest_policy == "reject":
        return sorted(RADIOGRAPH_SOP_CLASSES)
    return sorted({str(uid) for uid in _ALL_STORAGE.values()} | RADIOGRAPH_SOP_CLASSES)


def supported_contexts(non_chest_policy: Literal["accept-and-skip", "reject"]) -> list[PresentationContext]:
    """Verification plus the storage classes for ``non_chest_policy``, each with every transfer syntax."""
    contexts = [build_context(VERIFICATION)]
    contexts.extend(build_context(uid, list(TRANSFER_SYNTAXES)) for uid in storage_sop_classes(non_chest_policy))
    return contexts
