"""Helpers for the listener's tests (not fixtures): settings, a running listener, reading rows back."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.association import Association

from radtrace.config import Settings, load_settings
from radtrace.dicom_listener.ae import Listener
from radtrace.dicom_listener.dcmtk import echoscu
from radtrace.store.engine import Store

__all__ = [
    "associate",
    "audit_payloads",
    "audit_types",
    "dataset_bytes",
    "listener_env",
    "listener_settings",
    "rows",
    "running",
    "start_listener",
]


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


def listener_env(tmp_path: Path, port: int, database_url: str) -> dict[str, str]:
    """The environment of a ``radtrace listen`` process on 127.0.0.1:port that admits 'PACS'."""
    return {
        "RADTRACE_DATA_DIR": str(tmp_path / "radtrace"),
        "RADTRACE_STORE__URL": database_url,
        "RADTRACE_LISTENER__HOST": "127.0.0.1",
        "RADTRACE_LISTENER__PORT": str(port),
        "RADTRACE_LISTENER__ALLOWED_CALLERS": '[{"ae_title": "PACS"}]',
        "RADTRACE_LISTENER__SETTLE_SECONDS": "1.0",
        "RADTRACE_LISTENER__MIN_FREE_BYTES": "0",
    }


def start_listener(env: dict[str, str], port: int) -> subprocess.Popen[str]:
    """Start ``radtrace listen`` with ``env`` (and no other RADTRACE_ variable); return once echoscu gets through."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | env
    process = subprocess.Popen(
        [sys.executable, "-m", "radtrace", "listen"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    while echoscu(port).returncode != 0:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"listener did not start: {process.communicate()[0][-2000:]}")
        time.sleep(0.2)
    return process
