"""The fast path's pure pieces: splitting a P-DATA-TF body into PDVs, and hashing on a thread of its own."""

from __future__ import annotations

import hashlib
import struct

from radtrace.dicom_listener.transport import _Hasher, _pdv_items


def _pdv(context_id: int, control: int, data: bytes) -> bytes:
    return struct.pack(">L", len(data) + 2) + bytes((context_id, control)) + data


def test_pdvs_are_found_with_their_context_control_header_and_data() -> None:
    body = bytearray(_pdv(1, 0x03, b"command") + _pdv(3, 0x00, b"data") + _pdv(3, 0x02, b""))
    items = _pdv_items(body)
    assert items is not None
    assert [(cx, control, bytes(body[start:end])) for cx, control, start, end in items] == [
        (1, 0x03, b"command"),
        (3, 0x00, b"data"),
        (3, 0x02, b""),
    ]


def test_a_malformed_body_is_left_to_pynetdicom() -> None:
    good = _pdv(1, 0x00, b"abcd")
    assert _pdv_items(bytearray()) is None  # no PDV at all
    assert _pdv_items(bytearray(good[:-1])) is None  # the item runs past the PDU
    assert _pdv_items(bytearray(good + b"\x00\x00")) is None  # a stray partial item header
    assert _pdv_items(bytearray(struct.pack(">L", 1) + b"\x01")) is None  # shorter than its own header


def test_the_hasher_hashes_chunks_in_order_and_stops_when_closed() -> None:
    hasher = _Hasher()
    chunks = [bytes([n]) * (5000 + n) for n in range(50)]
    digest = hashlib.sha256(b"meta")
    for chunk in chunks:
        hasher.update(digest, memoryview(chunk))
    hasher.wait()
    assert digest.hexdigest() == hashlib.sha256(b"meta" + b"".join(chunks)).hexdigest()
    thread = hasher._thread
    assert thread is not None
    assert thread.is_alive()
    hasher.close()
    thread.join(5)
    assert not thread.is_alive()
    hasher.wait()  # nothing queued, no thread: returns at once
