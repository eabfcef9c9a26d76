"""One source address cannot hold every association slot: the others still get in.

A host that opens associations and keeps them (a misconfigured PACS with many sending threads, or
a hostile peer) used to take all ``listener.max_associations`` slots; every other modality was then
rejected until it let go. ``listener.max_associations_per_source`` (half of the slots unless set)
bounds one address; past it the host gets A-ASSOCIATE-RJ transient / service provider /
local-limit-exceeded (PS3.8 Table 9-21: 2, 3, 2), each refusal audited.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.association import Association

from listener_support import audit_payloads, listener_settings, running
from radtrace.dicom_listener.dcmtk import echoscu
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration


@pytest.fixture
def held() -> Iterator[list[Association]]:
    associations: list[Association] = []
    yield associations
    for assoc in associations:
        if assoc.is_established:
            assoc.abort()


def _associate(port: int, source: str) -> Association:
    peer = AE(ae_title="PACS")
    peer.add_requested_context("1.2.840.10008.1.1")
    peer.acse_timeout = peer.network_timeout = 5
    return peer.associate("127.0.0.1", port, ae_title="RADTRACE", bind_address=(source, 0))


def test_one_source_holding_associations_cannot_lock_out_another(
    tmp_path: Path, sqlite_store: Store, listener_port: int, held: list[Association]
) -> None:
    settings = listener_settings(tmp_path, listener_port, max_associations=4)  # 2 per source unless set
    with running(settings, sqlite_store):
        held.extend(_associate(listener_port, "127.0.0.2") for _ in range(4))
        assert [a.is_established for a in held] == [True, True, False, False]
        rejected = held[2]
        assert rejected.is_rejected
        assert (rejected.acceptor.primitive.result, rejected.acceptor.primitive.result_source) == (2, 3)
        assert rejected.acceptor.primitive.diagnostic == 2  # local-limit-exceeded
        assert echoscu(listener_port).returncode == 0  # 127.0.0.1 is another source: it gets in
        held.append(_associate(listener_port, "127.0.0.3"))
        assert held[-1].is_established
    audited = [json.loads(p) for p in audit_payloads(sqlite_store, "association_rejected")]
    assert {a["reason"] for a in audited} == {"too many concurrent associations from this source"}
    assert audited[0]["diagnostic"] == 2
    assert sum(a["count"] for a in audited) == 2  # both refusals, the second counted in the interval's summary


def test_the_per_source_limit_is_a_setting(
    tmp_path: Path, sqlite_store: Store, listener_port: int, held: list[Association]
) -> None:
    settings = listener_settings(tmp_path, listener_port, max_associations=4, max_associations_per_source=3)
    with running(settings, sqlite_store):
        held.extend(_associate(listener_port, "127.0.0.2") for _ in range(4))
        assert [a.is_established for a in held] == [True, True, True, False]
        for assoc in held[:3]:
            assoc.release()
        held.append(_associate(listener_port, "127.0.0.2"))  # released slots are free for the same source again
        assert held[-1].is_established
