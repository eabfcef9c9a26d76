"""What the listener accepts at negotiation: SOP classes and the transfer syntaxes a PACS sends.

Every transfer syntax listed is stored bit for bit as received; nothing here decodes pixel data.
Radiograph classes (CR, DX for presentation and for processing) are always accepted; the other
storage classes a PACS may misroute are accepted (then skipped, with an audit entry) or not offered
at all, as ``listener.non_chest_policy`` says.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Final, Literal

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
from pynetdicom.service_class import ServiceClass, StorageServiceClass
from pynetdicom.sop_class import _STORAGE_CLASSES as _ALL_STORAGE  # the full PS3.4 Annex B table
from pynetdicom.sop_class import uid_to_service_class

from radtrace.dicom_listener.refusals import SERVICES_NOT_OFFERED

__all__ = [
    "KEY_OBJECT_SELECTION",
    "RADIOGRAPH_SOP_CLASSES",
    "SERVICES_NOT_OFFERED",
    "TRANSFER_SYNTAXES",
    "VERIFICATION",
    "another_service",
    "refused_pairs",
    "storage_sop_classes",
    "supported_contexts",
]

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


#: Key Object Selection Document Storage: how a PACS sends an IHE IOCM rejection note
#: (:mod:`.rejection_note`), offered under either ``listener.non_chest_policy``.
KEY_OBJECT_SELECTION: Final = "1.2.840.10008.5.1.4.1.1.88.59"


def storage_sop_classes(non_chest_policy: Literal["accept-and-skip", "reject"]) -> list[str]:
    """The storage SOP classes offered: radiographs and Key Object Selection (rejection notes: a PACS withdrawing an
    image radtrace read must be heard under either policy), or every storage class pynetdicom knows."""
    if non_chest_policy == "reject":
        return sorted(RADIOGRAPH_SOP_CLASSES | {KEY_OBJECT_SELECTION})
    return sorted({str(uid) for uid in _ALL_STORAGE.values()} | RADIOGRAPH_SOP_CLASSES)


def supported_contexts(non_chest_policy: Literal["accept-and-skip", "reject"]) -> list[PresentationContext]:
    """Verification plus the storage classes for ``non_chest_policy``, each with every transfer syntax."""
    contexts = [build_context(VERIFICATION)]
    contexts.extend(build_context(uid, list(TRANSFER_SYNTAXES)) for uid in storage_sop_classes(non_chest_policy))
    return contexts


def another_service(context: PresentationContext) -> bool:
    """Whether ``context`` was refused for its SOP class (PS3.8 Table 9-18 result 3) and that SOP class belongs to a
    known DICOM service other than storage and verification. A SOP class pynetdicom does not know (a private storage
    class: an instance refused) or a transfer syntax refused (result 4) is a refusal as before."""
    if context.result != 3:
        return False
    service = uid_to_service_class(str(context.abstract_syntax))
    return service is not ServiceClass and not issubclass(service, StorageServiceClass)


def refused_pairs(refused: Iterable[PresentationContext], request: Any) -> Iterator[dict[str, str | int]]:
    """What the refused presentation contexts proposed, for their audit: per context refused for its abstract syntax
    (PS3.8 Table 9-18 result 3) the SOP class alone; per one refused otherwise (4, transfer syntaxes not supported)
    one SOP class and transfer syntax pair per transfer syntax the A-ASSOCIATE-RQ (``request``) proposed for it."""
    proposed = {
        cx.context_id: cx.transfer_syntax for cx in getattr(request, "presentation_context_definition_list", None) or []
    }
    for context in refused:
        sop_class = str(context.abstract_syntax)
        if context.result == 3:
            yield {"sop_class_uid": sop_class, "result": 3}
            continue
        for syntax in proposed.get(context.context_id) or context.transfer_syntax:
            yield {"sop_class_uid": sop_class, "transfer_syntax": str(syntax), "result": int(context.result or 0)}
