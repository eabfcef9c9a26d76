"""Helpers for the listener's tests (not fixtures): settings, a running listener, reading rows back."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.association import Association

from radtrace.config import Settings, load_settings
from radtrace.dicom_listener.ae import Listener
from radtrace.store.engine import Store

__all__ = ["associate", "audit_payloads", "audit_types", "dataset_bytes", "listener_settings", "rows", "running"]


def listener_settings(tmp_path: Path, port: int, **listener: Any) -> Settings:
    """Settings for a listener on 127.0.0.1:port that admits the calling AE 'PACS'."""
    options: dict[str, Any] = {"host": "127.0.0.1", "port": port, "allowed_callers": [{"ae_title": "PACS"}]}
    return load_settings(data_dir=tmp_path / "radtrace", listener=options | listener)


def associate(image: Path, port: int) -> Association:
    """A pynetdicom association from 'PACS' to the listener on 127.0.0.1:port, proposing ``image``'s SOP class."""
    peer = AE(ae_title="PACS")
    peer.add_requested_context(str(dcmread(image, stop_before_pixels=True).SOPClassUID))
    assoc = peer.associate("127.0.0.1", port, ae_title="RADTRACE")
    assert assoc.is_established
    return assoc


@contextlib.contextmanager
def running(settings: Settings, store: Store, **kwargs: Any) -> Iterator[Listener]:
    with Listener(settings, store, **kwargs) as listener:
        yield listener


def dataset_bytes(path: Path) -> bytes:
    """The bytes after the file meta group: what travelled over the network."""
    data = path.read_bytes()
    assert data[128:132] == b"DICM"
    start = 132
    length = int.from_bytes(data[start + 8 : start + 12], "little")  # (0002,0000) group length, UL
    return data[start + 12 + length :]


def rows(store: Store, model: Any) -> list[Any]:
    with store.session() as session:
        return list(session.scalars(sa.select(model)).all())


def audit_types(store: Store) -> list[str]:
    with store.engine.connect() as connection:
        return [row[0] for row in connection.execute(sa.text("SELECT event_type FROM audit_events ORDER BY seq"))]


def audit_payloads(store: Store, event_type: str) -> list[str]:
    """The JSON payloads of one type of audit event, oldest first."""
    with store.engine.connect() as connection:
        query = sa.text("SELECT payload FROM audit_events WHERE event_type = :type ORDER BY seq")
        return [row[0] for row in connection.execute(query, {"type": event_type})]
