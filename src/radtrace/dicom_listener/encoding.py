"""A data set encoded Explicit VR Little Endian but sent under an Implicit VR Little Endian presentation context
(or the other way round).

pynetdicom writes a received data set after a file meta group naming the negotiated transfer syntax, so such an
instance was stored with (0002,0010) claiming Implicit VR over Explicit VR bytes. pydicom (the listener's header
read, the worker) detects the VRs and reads it anyway; dcmtk reads by the file meta: ``dcmdump`` stops at the first
element ("larger than remaining bytes in file"), dicom3tools' ``dciodvfy`` finds no SOP Class, and so would any
archive or viewer built on them (Orthanc included) once the study is exported. Refusing it helps no one: the
modality cannot choose another encoding, and a PACS would retry it for ever. The bytes are not ambiguous (the
first elements walk as Explicit VR with ascending tags and lengths inside the file, not as Implicit VR), so the
listener accepts it and rewrites the file meta to name the encoding actually used, Explicit VR Little Endian; the
instance carries a deviation on (0002,0010) saying so, recorded on its row and in ``instance_received``. The same
holds the other way round: Implicit VR bytes under an Explicit VR Little Endian context (dcmtk then reads the first
element's length as a VR and fails alike) are stored as Implicit VR Little Endian.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path
from typing import Final

from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_file_meta_info
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from radtrace.dicom_listener.attributes import Deviation

__all__ = ["RELABELLED_SYNTAXES", "relabel_mismatched_encoding"]


def _deviation(used: str, context: str) -> Deviation:
    return Deviation(
        "(0002,0010)",
        "TransferSyntaxUID",
        f"data set encoded {used} under an {context} presentation context; stored as {used}",
    )


#: The deviation an instance so relabelled carries (no value of the instance's in it), by the context's syntax.
_RELABELLED: Final = {
    ImplicitVRLittleEndian: (
        ExplicitVRLittleEndian,
        _deviation("Explicit VR Little Endian", "Implicit VR Little Endian"),
    ),
    ExplicitVRLittleEndian: (
        ImplicitVRLittleEndian,
        _deviation("Implicit VR Little Endian", "Explicit VR Little Endian"),
    ),
}
#: The contexts whose data sets are looked at.
RELABELLED_SYNTAXES: Final = frozenset(_RELABELLED)

_LONG_VRS: Final = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_SHORT_VRS: Final = frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN", b"SH", b"SL", b"SS",
     b"ST", b"TM", b"UI", b"UL", b"US"}
)  # fmt: skip
_UNDEFINED: Final = 0xFFFFFFFF
_HEAD: Final = 64 * 1024
_WALKED: Final = 6  # elements walked (or the data set's end, or a sequence of undefined length, reached first)


def _walks(head: bytes, size: int, *, explicit: bool) -> bool:
    """Whether the data set's first elements read consistently in this encoding: tags ascending, VRs known (explicit),
    each value inside the data set (``size`` bytes)."""
    offset, previous, walked = 0, -1, 0
    while walked < _WALKED and offset < size:
        if offset + 8 > len(head):
            return walked > 0 and offset + 8 > size  # the end of the data set
        group, element = struct.unpack_from("<HH", head, offset)
        tag = group << 16 | element
        if tag <= previous:
            return False
        if explicit:
            vr = head[offset + 4 : offset + 6]
            if vr in _LONG_VRS:
                if offset + 12 > len(head):
                    return walked > 0
                (length,) = struct.unpack_from("<I", head, offset + 8)
                header = 12
            elif vr in _SHORT_VRS:
                (length,) = struct.unpack_from("<H", head, offset + 6)
                header = 8
            else:
                return False
        else:
            (length,) = struct.unpack_from("<I", head, offset + 4)
            header = 8
        walked += 1
        if length == _UNDEFINED:
            return True  # a sequence of undefined length: as far as a flat walk goes
        offset += header + length
        if offset > size:
            return False
        previous = tag
    return walked > 0


def relabel_mismatched_encoding(path: Path) -> Deviation | None:
    """Rewrite ``path``'s file meta to the little-endian encoding its data set is in when it claims the other one
    (Implicit VR over Explicit VR bytes, or the reverse; see the module); the deviation to record, None when the
    file was left alone. Written beside ``path``, fsynced, then renamed over it."""
    try:
        meta = read_file_meta_info(path)
    except Exception:  # not a Part 10 file: the header read refuses it and says why
        return None
    claimed = UID(str(meta.get("TransferSyntaxUID", "")))
    if claimed not in _RELABELLED:
        return None
    used, deviation = _RELABELLED[claimed]
    with path.open("rb") as handle:
        preamble = handle.read(132)
        if preamble[128:132] != b"DICM":
            return None
        group = handle.read(12)
        if len(group) < 12 or group[:4] != b"\x02\x00\x00\x00":
            return None
        (meta_length,) = struct.unpack_from("<I", group, 8)
        start = 132 + 12 + meta_length
        handle.seek(start)
        head = handle.read(_HEAD)
        size = os.fstat(handle.fileno()).st_size - start
        as_used = used == ExplicitVRLittleEndian
        if not _walks(head, size, explicit=as_used) or _walks(head, size, explicit=not as_used):
            return None
        meta.TransferSyntaxUID = used
        written = DicomBytesIO()
        written.is_little_endian, written.is_implicit_VR = True, False
        write_file_meta_info(written, meta, enforce_standard=True)
        target = path.with_name(path.name + ".relabelled")
        try:
            with target.open("wb") as out:
                out.write(preamble)
                out.write(written.getvalue())
                handle.seek(start)
                shutil.copyfileobj(handle, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.replace(target, path)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
    return deviation
