"""Hostile stored films for the worker's decode path, and a child process that decodes them as the worker does.

The listener bounds what it accepts; the worker decodes what was stored (instances accepted before a limit was
lowered, spooled another way, or that the listener's checks let through). These tools are for tests and benches:

- :class:`DecodeChild`: a child process (``python -m radtrace.testing.decode_abuse``) that decodes one file at a
  time as the worker does (the spooled header, the view choice, then the chosen image's pixels through
  :func:`radtrace.model.study.prepare_study` with the settings' default budgets) and reports for each its outcome
  (read, skipped, failed with the reason, an unexpected exception, or the child died or overran its time), the
  seconds it took and how far its resident memory rose above what it held before (the kernel's high-water mark,
  reset before each file). A file that kills the child is reported as such and the child started again.
- :func:`hostile_films`: files derived from the real films in ``tests/data/real-cxr``, each broken in one stated
  way (decompression bombs, headers that disagree with the data or the codestream, odd photometric
  interpretations, truncated or garbage codestreams, fragments and offset tables that lie, extreme VOI and
  rescale values, float pixel data), with what the worker must do with each.
- :func:`header_variant`: a film derived from a real one with header attributes replaced (for property tests).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import os
import select
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

__all__ = [
    "REAL_FILMS",
    "DecodeChild",
    "DecodeOutcome",
    "HostileFilm",
    "deflated_with_private_zeros",
    "header_variant",
    "hostile_films",
    "j2k_components_film",
]

#: The real films the hostile ones are made from (``tests/data/real-cxr`` in a checkout).
REAL_FILMS: Final = Path(__file__).resolve().parents[3] / "tests" / "data" / "real-cxr"
NIH: Final = "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm"
RG1_J2K: Final = "nema-rg1-cr-chest-pa-mono1-j2k-lossy.dcm"
RG1_JLS: Final = "nema-rg1-cr-chest-pa-mono1-jpegls-near-lossless.dcm"
CANINE: Final = "canine-dx-thorax-lateral-mono1-small.dcm"

#: What the child's own imports hold is not the decode's: growth is measured from the RSS just before each file.
_MIB: Final = 1 << 20


@dataclass(frozen=True)
class DecodeOutcome:
    """How one file's decode ended in the child."""

    outcome: str
    """``read``, ``skipped``, ``failed`` (a RadtraceError: the study's failed state), ``unexpected`` (any other
    exception: the study would fail as 'unexpected ...'), ``died`` (the child process was killed or aborted),
    ``timeout``."""
    reason: str
    seconds: float
    peak_rss_growth: int
    """Bytes the child's resident memory rose above its RSS before the file (0 when it died)."""
    returncode: int | None = None
    error_type: str = ""


class DecodeChild:
    """A child process decoding files as the worker does; a context manager. See the module doc."""

    def __init__(self, *, timeout_s: float = 120.0, memory_limit_bytes: int | None = None) -> None:
        self.timeout_s = timeout_s
        self.memory_limit_bytes = memory_limit_bytes
        self._process: subprocess.Popen[str] | None = None
        self._stderr = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115  (closed in close())

    def __enter__(self) -> DecodeChild:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _start(self) -> subprocess.Popen[str]:
        command = [sys.executable, "-m", __name__]
        if self.memory_limit_bytes is not None:
            command += ["--memory-limit", str(self.memory_limit_bytes)]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")}
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=environment,
        )
        ready = self._line(process, 120.0)
        if ready != "ready":
            self._stop(process)
            raise RuntimeError(f"the decode child did not start: {ready!r}")
        return process

    def decode(self, path: Path) -> DecodeOutcome:
        """Decode ``path`` in the child (started, or started again, as needed)."""
        if self._process is None or self._process.poll() is not None:
            self._process = self._start()
        process = self._process
        assert process.stdin is not None
        started = time.monotonic()
        try:
            process.stdin.write(f"{path}\n")
            process.stdin.flush()
        except BrokenPipeError:
            pass
        line = self._line(process, self.timeout_s)
        seconds = time.monotonic() - started
        if not line:
            timed_out = line is None  # else the pipe closed: the child died
            if not timed_out:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(30)
            self._stop(process)
            self._process = None
            if timed_out:
                return DecodeOutcome("timeout", f"no answer in {self.timeout_s} s", seconds, 0, None)
            self._stderr.seek(0)
            stderr = self._stderr.read().decode("utf-8", "replace")[-600:]
            self._stderr.seek(0)
            self._stderr.truncate()
            return DecodeOutcome("died", stderr.strip(), seconds, 0, process.returncode)
        answer = json.loads(line)
        return DecodeOutcome(
            answer["outcome"],
            answer["reason"],
            answer["seconds"],
            answer["peak_rss_growth"],
            0,
            answer.get("type", ""),
        )

    @staticmethod
    def _line(process: subprocess.Popen[str], timeout_s: float) -> str | None:
        """The child's next line; "" when its output closed, None when none came in ``timeout_s``."""
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], timeout_s)
        if not ready:
            return None
        return process.stdout.readline().strip()

    @staticmethod
    def _stop(process: subprocess.Popen[str]) -> None:
        if process.poll() is None:
            process.kill()
        process.wait(30)
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def close(self) -> None:
        """Stop the child."""
        if self._process is not None:
            process, self._process = self._process, None
            if process.poll() is None and process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(10)
            self._stop(process)
        self._stderr.close()


# --- the child ---------------------------------------------------------------------------------------------------


def _status_bytes(field_name: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
        clear.write("5")  # resets VmHWM to the current RSS (Linux 4.0+)


def _decode_as_the_worker(path: Path) -> dict[str, Any]:
    """One file through the worker's path: its spooled header, the views, then prepare_study with the defaults."""
    from radtrace.config_listener import ListenerSettings
    from radtrace.config_sections import ModelSettings
    from radtrace.errors import RadtraceError
    from radtrace.model.study import Skipped, prepare_study, spooled_image

    fields = ModelSettings.model_fields
    started = time.monotonic()
    answer: dict[str, Any]
    try:
        image = spooled_image(path, hashlib.sha256(path.read_bytes()).hexdigest())
        prepared = prepare_study(
            [image],
            min_pixels=int(fields["min_pixels"].default),
            max_pixels=int(fields["max_pixels"].default),
            accept_unknown_view=True,
            max_source_pixels=int(ListenerSettings.model_fields["max_image_pixels"].default),
        )
        if isinstance(prepared, Skipped):
            answer = {"outcome": "skipped", "reason": prepared.reason}
        else:
            answer = {"outcome": "read", "reason": ""}
    except RadtraceError as exc:
        answer = {"outcome": "failed", "reason": exc.reason, "type": type(exc).__name__}
    except Exception as exc:  # what the pipeline would record as 'unexpected ...'
        answer = {"outcome": "unexpected", "reason": f"{type(exc).__name__}: {exc}"[:500], "type": type(exc).__name__}
    answer["seconds"] = round(time.monotonic() - started, 3)
    return answer


def _serve(memory_limit: int | None) -> None:
    from radtrace.limits import apply_memory_ceiling

    warnings.simplefilter("ignore")  # pydicom's warnings about odd values are the point of these files
    _decode_as_the_worker(Path(os.devnull))  # imports done before the first measure
    apply_memory_ceiling(memory_limit)
    print("ready", flush=True)
    for line in sys.stdin:
        gc.collect()
        _reset_peak()
        before = _status_bytes("VmRSS")
        answer = _decode_as_the_worker(Path(line.strip()))
        answer["peak_rss_growth"] = max(0, _status_bytes("VmHWM") - before)
        print(json.dumps(answer), flush=True)


# --- hostile films -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostileFilm:
    """A stored film broken in one way, and what the worker must do with it."""

    name: str
    path: Path
    expect: str
    """``read``, ``skipped`` or ``failed``."""
    reason: str = ""
    """For ``failed``: text the reason must contain (the element or the codestream named)."""
    slow: bool = False
    """Decodes a large image (seconds, a GiB or more): run with the full switch only."""


def _whole_codestream(ds: Any) -> bytes:
    from pydicom.encaps import generate_fragments

    return b"".join(bytes(fragment) for fragment in list(generate_fragments(ds.PixelData))[1:])  # after the BOT


def _save(ds: Any, path: Path) -> Path:
    ds.ViewPosition = "PA"
    ds.BodyPartExamined = "CHEST"
    ds.save_as(path, enforce_file_format=True)
    return path


def _j2k_with_components(components: int) -> bytes:
    """The RG1 JPEG 2000 codestream with its SIZ rewritten to ``components`` components like the first."""
    from pydicom import dcmread

    data = bytearray(_whole_codestream(dcmread(REAL_FILMS / RG1_J2K)))
    siz = data.index(b"\xff\x51")
    (length,) = struct.unpack_from(">H", data, siz + 2)
    fixed = bytes(data[siz : siz + 38])  # marker, Lsiz, Rsiz, sizes, tiles (T.800 A.5.1)
    component = bytes(data[siz + 40 : siz + 43])  # Ssiz, XRsiz, YRsiz of the first component
    segment = fixed + struct.pack(">H", components) + component * components
    segment = segment[:2] + struct.pack(">H", len(segment) - 2) + segment[4:]
    return bytes(data[:siz]) + segment + bytes(data[siz + 2 + length :])


def j2k_components_film(path: Path, components: int = 3) -> Path:
    """The RG1 JPEG 2000 film saved to ``path`` with its codestream's SIZ declaring ``components`` components
    under its header's Samples per Pixel 1 (hostile film ``j2k-3-components-1-sample``)."""
    from pydicom import dcmread
    from pydicom.encaps import encapsulate

    ds = dcmread(REAL_FILMS / RG1_J2K)
    ds.PixelData = encapsulate([_j2k_with_components(components)])
    return _save(ds, path)


def _jls_with_components(components: int) -> bytes:
    """The RG1 JPEG-LS codestream with its SOF55 rewritten to ``components`` components."""
    from pydicom import dcmread

    data = bytearray(_whole_codestream(dcmread(REAL_FILMS / RG1_JLS)))
    sof = data.index(b"\xff\xf7")
    declared = data[sof + 9]
    head = bytes(data[sof : sof + 9]) + bytes([components])
    segment = head + b"".join(bytes([index + 1, 0x11, 0]) for index in range(components))
    segment = segment[:2] + struct.pack(">H", len(segment) - 2) + segment[4:]
    return bytes(data[:sof]) + segment + bytes(data[sof + 10 + 3 * declared :])


def _canine_patched(encoding: str, old: bytes, new: bytes) -> Any:
    """The canine film re-encoded in JPEG 2000 or JPEG-LS lossless, the first ``old`` of its codestream replaced."""
    from pydicom import dcmread
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless

    ds = dcmread(REAL_FILMS / CANINE)
    syntax, plugin = (JPEG2000Lossless, "pylibjpeg") if encoding == "j2k" else (JPEGLSLossless, "pyjpegls")
    ds.compress(syntax, encoding_plugin=plugin)
    codestream = _whole_codestream(ds)
    if old not in codestream:
        raise RuntimeError(f"the {encoding} codestream has no {old.hex()} to patch")
    ds.PixelData = encapsulate([codestream.replace(old, new, 1)])
    return ds


def _nih_jpeg_lossless(old: bytes, new: bytes) -> Any:
    """The NIH film in JPEG Lossless SV1 (GDCM's encoder, as the study factory's), the first ``old`` of its
    codestream replaced (a JPEG Lossless frame only GDCM decodes here)."""
    from pydicom import dcmread
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLosslessSV1

    from radtrace.testing.pixel_data import encode_pixel_data

    ds = dcmread(REAL_FILMS / NIH)
    encode_pixel_data(ds, JPEGLosslessSV1)
    codestream = _whole_codestream(ds)
    if old and old not in codestream:
        raise RuntimeError(f"the JPEG Lossless codestream has no {old.hex()} to patch")
    ds.PixelData = encapsulate([codestream.replace(old, new, 1) if old else codestream])
    return ds


def deflated_with_private_zeros(ds: Any, path: Path, zero_bytes: int) -> Path:
    """``ds`` saved deflated (Deflated Explicit VR Little Endian) with a private OB (0009,1011) of ``zero_bytes``
    zeros before its pixel data: a file of about ``ds``'s size plus ``zero_bytes / 1000`` that inflates by
    ``zero_bytes``. Written as it is deflated (the zeros are never held)."""
    from radtrace.testing.deflate_abuse import deflated_with

    ds.add_new(0x00090010, "LO", "RADTRACE TEST")

    def zeros() -> Iterator[bytes]:
        yield struct.pack("<HH2sHL", 0x0009, 0x1011, b"OB", 0, zero_bytes)
        chunk = bytes(1 << 20)
        for start in range(0, zero_bytes, len(chunk)):
            yield chunk[: zero_bytes - start]

    return deflated_with(ds, path, 0x00091011, zeros())


def header_variant(film: Path | str, attributes: dict[str, Any], path: Path, *, pixel_bytes: int | None = None) -> Path:
    """``film`` (a file, or a name in :data:`REAL_FILMS`) saved to ``path`` with ``attributes`` set (None deletes
    one) and its native pixel data cut or padded to ``pixel_bytes``."""
    from pydicom import dcmread
    from pydicom.uid import ExplicitVRLittleEndian

    ds = dcmread(film if isinstance(film, Path) else REAL_FILMS / film)
    if not ds.file_meta.TransferSyntaxUID.is_encapsulated:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the values are meant to be wrong
        for keyword, value in attributes.items():
            if value is None:
                if keyword in ds:
                    delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        if pixel_bytes is not None:
            data = bytes(ds.PixelData)
            ds.PixelData = data[:pixel_bytes] + bytes(max(0, pixel_bytes - len(data)))
        return _save(ds, path)


def hostile_films(directory: Path) -> list[HostileFilm]:
    """Write the hostile films under ``directory``; see the module doc."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values these films are made of
        return _hostile_films(directory)


def _hostile_films(directory: Path) -> list[HostileFilm]:
    import numpy as np
    from pydicom import dcmread
    from pydicom.encaps import encapsulate

    directory.mkdir(parents=True, exist_ok=True)
    films: list[HostileFilm] = []

    def add(name: str, ds: Any, expect: str, reason: str = "", *, slow: bool = False) -> None:
        films.append(HostileFilm(name, _save(ds, directory / f"{name}.dcm"), expect, reason, slow))

    def rg1(codestream: bytes | None = None, **attributes: Any) -> Any:
        ds = dcmread(REAL_FILMS / RG1_J2K)
        if codestream is not None:
            ds.PixelData = encapsulate([codestream])
        for keyword, value in attributes.items():
            setattr(ds, keyword, value)
        return ds

    j2k = _whole_codestream(dcmread(REAL_FILMS / RG1_J2K))
    jls = _whole_codestream(dcmread(REAL_FILMS / RG1_JLS))

    # Codestreams that disagree with the header's samples (GDCM aborted the process on these).
    add("j2k-3-components-1-sample", rg1(_j2k_with_components(3)), "failed", "(0028,0002) Samples per Pixel")
    add(
        "j2k-1-component-3-samples",
        rg1(SamplesPerPixel=3, PhotometricInterpretation="RGB", PlanarConfiguration=0),
        "failed",
        "(0028,0002) Samples per Pixel",
    )
    add(
        "j2k-3-components-monochrome",
        rg1(_j2k_with_components(3), SamplesPerPixel=3, PlanarConfiguration=0),
        "failed",
        "(0028,0004) Photometric Interpretation",
    )
    jls_ds = dcmread(REAL_FILMS / RG1_JLS)
    jls_ds.PixelData = encapsulate([_jls_with_components(4)])
    add("jls-4-components-1-sample", jls_ds, "failed", "(0028,0002) Samples per Pixel")

    # Codestream headers GDCM asserts on (found by mutating the canine film's re-encodings): the process aborted.
    add("j2k-siz-precision-128", _canine_patched("j2k", b"\x07\x01\x01\xff\x52", b"\xff\xff\xff\xff\x52"), "failed",
        "cannot decode the pixel data")  # fmt: skip
    add("jls-precision-24", _canine_patched("jls", b"\xff\xf7\x00\x0b\x08", b"\xff\xf7\x00\x0b\x18"), "failed",
        "cannot decode the pixel data")  # fmt: skip

    add("jpeg-lossless-dht-marker-lost", _nih_jpeg_lossless(b"\xff\xc4", b"\xff\xff"), "failed",
        "the decoder aborted")  # fmt: skip
    add("jpeg-lossless", _nih_jpeg_lossless(b"", b""), "read")

    # Truncated and garbage codestreams.
    rng = np.random.default_rng(20261205)
    add("j2k-truncated-10pc", rg1(j2k[: len(j2k) // 10]), "failed", "cannot decode the pixel data")
    add("j2k-garbage", rg1(rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes()), "failed", "(7FE0,0010)")
    garbled = bytearray(j2k)
    tile = garbled.index(b"\xff\x90") + 200  # after the first tile-part header: damaged entropy-coded data
    garbled[tile:] = rng.integers(0, 256, len(garbled) - tile, dtype=np.uint8).tobytes()
    add("j2k-garbage-after-tile-header", rg1(bytes(garbled)), "read")
    jls_cut = dcmread(REAL_FILMS / RG1_JLS)
    jls_cut.PixelData = encapsulate([jls[: len(jls) // 100]])
    add("jls-truncated-1pc", jls_cut, "failed", "cannot decode the pixel data")

    # Fragments and offset tables that lie.
    lying = rg1()
    raw = bytearray(lying.PixelData)
    first = 8 + struct.unpack_from("<L", raw, 4)[0]
    struct.pack_into("<L", raw, first + 4, 0xFFFFFFF0)
    lying.PixelData = bytes(raw)
    add("j2k-fragment-length-past-the-end", lying, "failed", "cannot decode the pixel data")
    far = rg1()
    far.PixelData = encapsulate([j2k], has_bot=True)
    raw = bytearray(far.PixelData)
    struct.pack_into("<L", raw, 8, 0x7FFFFFFF)
    far.PixelData = bytes(raw)
    add("j2k-offset-table-points-far", far, "read")
    add("j2k-13-frames-declared-1-fragment", rg1(NumberOfFrames=13), "read")

    # Decompression bombs within and beyond the pixel limit.
    def siz_patched(rows: int, columns: int) -> bytes:
        data = bytearray(j2k)
        siz = data.index(b"\xff\x51")
        struct.pack_into(">LLLLLL", data, siz + 6, columns, rows, 0, 0, columns, rows)
        return bytes(data)

    add("j2k-bomb-65535-square", rg1(siz_patched(65535, 65535), Rows=65535, Columns=65535), "failed", "(0028,0010)")
    add("j2k-bomb-header-small", rg1(siz_patched(7000, 7000)), "failed", "codestream 7000x7000")
    add("j2k-bomb-7000-square-under-the-limit", rg1(siz_patched(7000, 7000), Rows=7000, Columns=7000), "read",
        slow=True)  # fmt: skip

    from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, RLELossless

    def nih(**attributes: Any) -> Any:
        ds = dcmread(REAL_FILMS / NIH)
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        for keyword, value in attributes.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        return ds

    rle = nih()
    rle.compress(RLELossless)
    runs = b"\x81\x80" * (4 * _MIB)  # replicate runs: 8 MiB that decode to 512 MiB, for a 1 MiB frame
    rle.PixelData = encapsulate([struct.pack("<16L", 1, 64, *([0] * 14)) + runs])
    add("rle-segment-decodes-to-512-mib", rle, "failed", "same value")
    rle_68 = nih()
    rle_68.file_meta.TransferSyntaxUID = RLELossless
    rle_68.PixelData = encapsulate([struct.pack("<16L", 1, 68, *([0] * 14)) + bytes(4) + runs])
    add("rle-segment-at-68-decodes-to-512-mib", rle_68, "failed", "Invalid segment offset")
    deflated = nih()
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    add("deflated-film", deflated, "read")
    # A 1.0 MB file the listener accepts (it inflates under its limit): pydicom inflated it whole, twice.
    zeros = deflated_with_private_zeros(nih(), directory / "deflated-250-mib-private-zeros.dcm", 250 * _MIB)
    films.append(HostileFilm("deflated-250-mib-private-zeros", zeros, "read"))
    # Inside sequences (radtrace.testing.deflate_abuse): pydicom held the item's 250 MiB (+1,050 MB); bombs refused.
    from radtrace.testing.deflate_abuse import shape_film

    for shape, size, expect in (("huge-in-item-undefined", 250 * _MIB, "read"), ("items-undefined", 200_000, "failed"),
                                ("deep", 5000, "failed")):  # fmt: skip
        path = shape_film(shape, size, directory / f"deflated-{shape}-{size}.dcm")
        reason = "(0009,1012) private" if expect == "failed" else ""
        films.append(HostileFilm(f"deflated-{shape}-{size}", path, expect, reason))

    # Headers that disagree with the data.
    add("native-rows-doubled", nih(Rows=2048), "failed", "(7FE0,0010) Pixel Data holds")
    add("native-47-frames-of-one", nih(NumberOfFrames=47), "failed", "(7FE0,0010) Pixel Data holds")
    add("native-bits-allocated-12", nih(BitsAllocated=12), "failed", "(0028,0100) 'Bits Allocated'")
    add("native-bits-stored-over-allocated", nih(BitsStored=17), "failed", "(0028,0101) 'Bits Stored'")
    add("native-pixel-representation-2", nih(PixelRepresentation=2), "failed", "(0028,0103)")
    add("native-planar-configuration-2", nih(SamplesPerPixel=3, PhotometricInterpretation="RGB",
        PlanarConfiguration=2, Rows=341), "failed", "(0028,0006)")  # fmt: skip
    add("native-samples-4", nih(SamplesPerPixel=4, PhotometricInterpretation="RGB"), "failed", "(0028,0002)")
    add("native-no-bits-allocated", nih(BitsAllocated=None), "failed", "(0028,0100)")
    add("native-photometric-unknown", nih(PhotometricInterpretation="MONOCHROME3"), "failed", "(0028,0004)")
    add("native-rgb-bits-stored-0", nih(SamplesPerPixel=3, PhotometricInterpretation="RGB", PlanarConfiguration=0,
        Rows=341, BitsStored=0), "failed", "(0028,0101) Bits Stored is 0")  # fmt: skip
    add("native-rows-65535", nih(Rows=65535), "failed", "(0028,0010) Rows")

    # Odd photometric interpretations.
    add("native-palette-without-luts", nih(PhotometricInterpretation="PALETTE COLOR"), "failed", "(0028,0004)")
    for photometric in ("YBR_FULL", "YBR_ICT"):
        add(f"native-{photometric.lower()}", nih(SamplesPerPixel=3, PhotometricInterpretation=photometric,
            PlanarConfiguration=0, Rows=341), "read")  # fmt: skip

    # Extreme Modality LUT and VOI values.
    add("rescale-overflows", nih(RescaleSlope="1e308", RescaleIntercept="-1e308"), "failed", "(0028,1053)")
    add("window-nan", nih(WindowCenter="NaN", WindowWidth="NaN"), "read")
    add("window-huge", nih(WindowCenter="1e308", WindowWidth="1e308"), "read")
    add("sigmoid-width-1e-300", nih(WindowCenter="100", WindowWidth="1e-300", VOILUTFunction="SIGMOID"), "read")

    # Float pixel data (no radiograph IOD has it), NaN among the values.
    values = nih().pixel_array.astype(np.float32)
    values[::7, ::5] = np.nan
    floats = nih(PixelData=None, BitsStored=None, HighBit=None, PixelRepresentation=None, BitsAllocated=32)
    floats.FloatPixelData = values.tobytes()
    add("float-pixel-data-with-nan", floats, "failed", "(7FE0,0008) Float Pixel Data")
    doubles = nih(PixelData=None, BitsStored=None, HighBit=None, PixelRepresentation=None, BitsAllocated=64)
    doubles.DoubleFloatPixelData = np.full((1024, 1024), np.nan).tobytes()
    add("double-float-pixel-data-all-nan", doubles, "failed", "(7FE0,0009) Double Float Pixel Data")
    return films


def main(argv: list[str] | None = None) -> None:
    """The child: ``python -m radtrace.testing.decode_abuse [--memory-limit BYTES]``, paths on stdin."""
    args = sys.argv[1:] if argv is None else argv
    limit = int(args[args.index("--memory-limit") + 1]) if "--memory-limit" in args else None
    _serve(limit)


if __name__ == "__main__":
    main()
