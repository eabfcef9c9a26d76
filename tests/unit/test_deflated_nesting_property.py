"""Property tests of the streamed deflate reader's sequence parse (radtrace.dicom_deflated._Parser).

Generated data sets: private sequences nested up to 5 deep, each of defined or undefined length, each item of
defined or undefined length, holding short private values and further sequences, written after the NIH film's
header and before its pixel data, deflated. Well formed, the streamed parse gives what pydicom's whole read gives.
With bytes of the inflated data set overwritten (lengths, tags, delimiters broken), the worker's header read either
reads it or refuses it with a DicomInputError, and holds no more than a few MiB while doing so.
"""

from __future__ import annotations

import contextlib
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from radtrace.dicom_deflated import read_bounded, read_deflated
from radtrace.dicom_listener.headers import read_header
from radtrace.errors import DicomInputError
from radtrace.model.study import spooled_image
from radtrace.testing.decode_abuse import NIH, REAL_FILMS
from radtrace.testing.deflate_abuse import deflated_with, plain_with

pytestmark = pytest.mark.unit

_UNDEFINED = 0xFFFFFFFF

#: A data set: [(element number in group 0009, value bytes | (sequence defined?, [(item defined?, data set)]))]
_values = st.binary(min_size=0, max_size=24).map(lambda b: b + b"\0" * (len(b) % 2))
_datasets = st.recursive(
    st.lists(_values, min_size=0, max_size=3).map(lambda values: [("value", v) for v in values]),
    lambda children: st.lists(
        st.one_of(
            _values.map(lambda v: ("value", v)),
            st.tuples(st.booleans(), st.lists(st.tuples(st.booleans(), children), min_size=0, max_size=3)).map(
                lambda s: ("sequence", s)
            ),
        ),
        min_size=0,
        max_size=4,
    ),
    max_leaves=40,
)


def _encode(dataset: list[tuple[str, Any]]) -> bytes:
    out = bytearray(struct.pack("<HH", 0x0009, 0x0010) + b"LO" + struct.pack("<H", 14) + b"RADTRACE TEST ")
    for index, (kind, content) in enumerate(dataset):
        tag = struct.pack("<HH", 0x0009, 0x1010 + index)
        if kind == "value":
            out += tag + b"OB\0\0" + struct.pack("<L", len(content)) + content
            continue
        defined, items = content
        body = bytearray()
        for item_defined, item in items:
            inner = _encode(item)
            if item_defined:
                body += struct.pack("<HHL", 0xFFFE, 0xE000, len(inner)) + inner
            else:
                body += struct.pack("<HHL", 0xFFFE, 0xE000, _UNDEFINED) + inner + struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
        if not defined:
            body += struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
        out += tag + b"SQ\0\0" + struct.pack("<L", len(body) if defined else _UNDEFINED) + body
    return bytes(out)


def _film(directory: Path, dataset: list[tuple[str, Any]], name: str) -> Path:
    return deflated_with(pydicom.dcmread(REAL_FILMS / NIH), directory / name, 0x00090010, iter([_encode(dataset)]))


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dataset=_datasets)
def test_generated_nested_sequences_read_as_pydicom_reads_them_whole(tmp_path: Path, dataset: Any) -> None:
    path = _film(tmp_path, dataset, "generated.dcm")
    expected = pydicom.dcmread(path)
    with path.open("rb") as handle:
        read = read_deflated(handle, keep_bulk=True, defer_bytes=1 << 20, max_inflated_bytes=1 << 30)
    assert sorted(read.keys()) == sorted(expected.keys())
    for element in expected:
        assert read[element.tag] == element, element.tag


def _damaged(dataset: Any, damage: list[tuple[int, bytes]]) -> bytes:
    """``dataset`` encoded, with each ``(offset, bytes)`` of ``damage`` written over it (offsets wrap around)."""
    encoded = bytearray(_encode(dataset))
    for offset, data in damage:
        if encoded:
            at = offset % len(encoded)
            encoded[at : at + len(data)] = data[: len(encoded) - at]
    return bytes(encoded)


def _peak_reading(*reads: Callable[[], object]) -> int:
    """Peak bytes Python allocated while the ``reads`` ran, one after the other, each reading or refusing its file (a
    DicomInputError)."""
    tracemalloc.start()
    try:
        for read in reads:
            with contextlib.suppress(DicomInputError):
                read()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    dataset=_datasets, damage=st.lists(st.tuples(st.integers(0, 10_000), st.binary(min_size=1, max_size=4)), max_size=4)
)
def test_a_damaged_nested_data_set_is_read_or_refused_within_memory(
    tmp_path: Path, dataset: Any, damage: list[tuple[int, bytes]]
) -> None:
    path = deflated_with(
        pydicom.dcmread(REAL_FILMS / NIH), tmp_path / "damaged.dcm", 0x00090010, iter([_damaged(dataset, damage)])
    )
    peak = _peak_reading(lambda: spooled_image(path, ""))
    assert peak < 16 << 20, peak >> 20


def _plain_film(directory: Path, encoded: bytes, name: str) -> Path:
    """The NIH film saved Explicit VR Little Endian, not deflated, with ``encoded`` written after its header."""
    return plain_with(pydicom.dcmread(REAL_FILMS / NIH), directory / name, 0x00090010, iter([encoded]), implicit=False)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dataset=_datasets)
def test_generated_nested_sequences_in_a_plain_file_read_as_pydicom_reads_them_whole(
    tmp_path: Path, dataset: Any
) -> None:
    """The same parse over a file that is not deflated (read_bounded, which the listener and worker use for every
    syntax)."""
    path = _plain_film(tmp_path, _encode(dataset), "generated.dcm")
    expected = pydicom.dcmread(path)
    with path.open("rb") as handle:
        read = read_bounded(handle, keep_bulk=True, defer_bytes=1 << 20, max_inflated_bytes=1 << 30)
    assert read == expected
    header = spooled_image(path, "").dataset
    assert all(header[e.tag] == e for e in expected if e.tag != 0x7FE00010)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    dataset=_datasets, damage=st.lists(st.tuples(st.integers(0, 10_000), st.binary(min_size=1, max_size=4)), max_size=4)
)
def test_a_damaged_nested_data_set_in_a_plain_file_is_read_or_refused_within_memory(
    tmp_path: Path, dataset: Any, damage: list[tuple[int, bytes]]
) -> None:
    path = _plain_film(tmp_path, _damaged(dataset, damage), "damaged.dcm")
    peak = _peak_reading(lambda: spooled_image(path, ""), lambda: read_header(path))
    assert peak < 16 << 20, peak >> 20
