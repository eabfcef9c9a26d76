"""Any text, any payload: the event is recorded on SQLite and PostgreSQL, says what was there, is bounded, verifies.

Before radtrace.audit.recordable, a lone surrogate (a non-UTF-8 filename decoded with ``surrogateescape``) in any
field crashed the recorder (UnicodeEncodeError hashing the row), NUL in a column or a value past its width was
refused by PostgreSQL, and NaN, bytes or mixed keys in a payload raised in the caller: the event was lost.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from radtrace.audit.chain import verify_chain
from radtrace.audit.events import Actor, AuditEvent, EventType, canonical_json
from radtrace.audit.recordable import MAX_DEPTH, MAX_PAYLOAD_CHARS, MAX_TEXT_CHARS
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.errors import StoreUnavailableError
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.testing.services import free_port, temporary_postgres_database
from tests_support import radtrace

pytestmark = pytest.mark.integration

#: Examples per run: CI samples; RADTRACE_FULL_FUZZ=1 runs many more.
EXAMPLES = 600 if os.environ.get("RADTRACE_FULL_FUZZ") == "1" else 40

#: Column → the AuditEvent/Actor field it is recorded from.
FIELDS = ("actor_ae", "actor_host", "actor_user", "actor_process", "study_uid", "accession", "patient_id",
          "model_name", "model_version")  # fmt: skip
WIDTHS = {column.name: getattr(column.type, "length", None) for column in AuditEventRow.__table__.columns}

_SPECIAL = st.sampled_from(["\x00", "\udcff", "\udc80", "\ud800", "\udfff", "\x1b[31m", "\r\n", "\x85", "\u2028",
                            "\ufffe", "\uffff", "\\", '"', "…[cut: 3 chars]", "ü肺", "\U0001f600"])  # fmt: skip
HOSTILE_TEXT = st.lists(st.one_of(_SPECIAL, st.text(st.characters(codec=None, exclude_categories=()), max_size=8)),
                        max_size=12).map("".join)  # fmt: skip
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), HOSTILE_TEXT,
    st.binary(max_size=16),
)  # fmt: skip
KEYS = st.one_of(HOSTILE_TEXT, st.integers(-3, 3), st.binary(max_size=4), st.none(), st.booleans())
PAYLOADS = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
                        max_leaves=12)  # fmt: skip


def _escaped(text: str, *, nul: bool) -> str:
    """What the log is to show for ``text``: each lone surrogate as ``\\udcXX`` (and NUL as ``\\x00`` in a column)."""
    if nul:
        text = text.replace("\x00", "\\x00")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _shows(stored: str, original: str, width: int | None, *, nul: bool) -> None:
    """``stored`` is storable, within ``width``, and shows ``original`` (whole, or its start and a cut mark)."""
    stored.encode("utf-8")  # strict: no lone surrogate reached the row
    assert "\x00" not in stored or not nul
    limit = min(width or MAX_TEXT_CHARS, MAX_TEXT_CHARS)
    assert len(stored) <= limit
    expected = _escaped(original, nul=nul)
    if len(expected) <= limit:
        assert stored == expected  # nothing dropped, nothing replaced by a stand-in
        return
    mark = f"…[cut: {len(original)} chars]"
    kept = stored.removesuffix(mark) if stored.endswith(mark) else stored
    assert kept
    assert expected.startswith(kept)
    assert stored.endswith(mark) or len(mark) >= limit


def _is_plain_json(value: Any) -> bool:
    try:
        canonical_json(value).encode("utf-8")
    except (ValueError, UnicodeEncodeError, RecursionError):
        return False
    return True


@contextlib.contextmanager
def _both_stores(tmp_path: Path) -> Iterator[list[Store]]:
    with temporary_postgres_database() as postgres_url:
        stores = [Store.from_url(f"sqlite:///{tmp_path / 'radtrace.db'}"), Store.from_url(postgres_url)]
        try:
            for store in stores:
                upgrade(store)
            yield stores
        finally:
            for store in stores:
                store.dispose()


def _stored(store: Store, seq: int) -> sa.Row[Any]:
    with store.engine.connect() as connection:
        row = connection.execute(sa.select(AuditEventRow.__table__).where(AuditEventRow.seq == seq)).one()
    return row


def _verify_cli(store: Store, tmp_path: Path) -> None:
    env = {"RADTRACE_DATA_DIR": str(tmp_path / "var"), "RADTRACE_STORE__URL": store.engine.url.render_as_string(False)}
    verified = radtrace("audit", "verify", env=env)
    assert verified.returncode == 0, verified.stderr
    assert "audit chain valid" in verified.stdout


def test_any_text_in_any_field_and_any_payload_is_recorded_on_both_stores_and_verifies(tmp_path: Path) -> None:
    with _both_stores(tmp_path) as stores:
        recorders = [AuditRecorder(store) for store in stores]

        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
        @given(
            texts=st.fixed_dictionaries({name: HOSTILE_TEXT for name in FIELDS}),
            label=HOSTILE_TEXT.map(lambda text: text.replace(",", "")),
            text=HOSTILE_TEXT,
            nested=PAYLOADS,
        )
        # JSON orders keys 1 and False as numbers (false before 1): recorded as before, not re-sorted as text
        @example(texts=dict.fromkeys(FIELDS, ""), label="", text="\udcff", nested={1: None, False: None, "": 1.5})
        def record(texts: dict[str, str], label: str, text: str, nested: Any) -> None:
            payload = {"text": text, "nested": nested}
            actor = Actor(
                ae_title=texts["actor_ae"], host=texts["actor_host"], user=texts["actor_user"],
                process=texts["actor_process"] or "p",
            )  # fmt: skip
            ids = {name: texts[name] for name in FIELDS if not name.startswith("actor_")}
            event = AuditEvent(EventType.INSTANCE_REJECTED, actor, labels=(label,), payload=payload, **ids)
            for store, recorder in zip(stores, recorders, strict=True):
                row = _stored(store, recorder.record(event).seq)
                for name in FIELDS:
                    _shows(getattr(row, name), texts[name] or "p" * (name == "actor_process"), WIDTHS[name], nul=True)
                if label.strip():
                    _shows(row.labels.strip(","), label.strip(), None, nul=True)
                recorded = json.loads(row.payload)
                _shows(recorded["text"], text, None, nul=False)
                if _is_plain_json(payload):  # what was recordable before is recorded exactly as before
                    assert row.payload == canonical_json(payload)
                assert verify_chain(store).ok

        record()
        _verify_cli(stores[1], tmp_path)  # what an operator runs (the same walk as verify_chain; one CLI start: ~2 s)


def test_huge_deep_and_odd_payloads_are_recorded_bounded_with_a_mark(tmp_path: Path) -> None:
    deep: list[Any] = []
    inner = deep
    for _ in range(5_000):  # json.dumps alone: RecursionError
        inner.append([])
        inner = inner[0]
    looped: dict[str, Any] = {}
    looped["self"] = looped
    huge = "\udcff" + "x" * 10_000_000
    payload = {
        1: "one", "1": "the text one", "huge": huge, "bytes": b"\xff\x00" * 5_000_000, "deep": deep,
        "looped": looped, "nan": float("nan"),
        "inf": [float("inf"), float("-inf")], "many": list(range(50_000)), "big": 10**5000, "object": object(),
        "wide": {f"k{n}": "v" * 1_000 for n in range(5_000)},
    }  # fmt: skip
    event = AuditEvent(EventType.INSTANCE_REJECTED, Actor(ae_title=huge, user=huge), patient_id=huge, payload=payload)
    with _both_stores(tmp_path) as stores:
        for store in stores:
            row = _stored(store, AuditRecorder(store).record(event).seq)
            assert len(row.payload) < 2 * MAX_PAYLOAD_CHARS
            recorded = json.loads(row.payload)
            mark = "…[cut: 10000001 chars]"
            assert recorded["huge"] == "\\udcff" + "x" * (MAX_TEXT_CHARS - 6 - len(mark)) + mark
            assert recorded["bytes"].startswith("b'\\xff\\x00")
            assert recorded["bytes"].endswith("[cut: 10000000 bytes]")
            assert recorded["nan"] == "NaN"
            assert recorded["inf"] == ["Infinity", "-Infinity"]
            assert recorded["many"][-1] == "…[cut: 40000 more entries]"
            assert recorded["looped"] == {"self": "…[cut: contains itself]"}
            assert recorded["big"].startswith("<integer of")
            assert recorded["object"].startswith("<object object")
            assert (recorded["1"], recorded["1 (str key)"]) == ("one", "the text one")
            depth, node = 0, recorded["deep"]
            while isinstance(node, list) and node:
                depth, node = depth + 1, node[0]
            assert (depth, node) == (MAX_DEPTH - 1, f"…[cut: nested deeper than {MAX_DEPTH} levels]")
            assert "…cut" in recorded["wide"]  # the payload's total budget ran out among 5 MB of entries
            assert row.patient_id == "\\udcff" + "x" * (64 - 6 - len(mark)) + mark  # the column's width
            assert row.actor_ae == "\\udcff" + "x" * 10  # 16 wide: no room for the mark
            assert verify_chain(store).ok


def test_a_write_that_fails_tells_the_caller_without_the_text(caplog: pytest.LogCaptureFixture) -> None:
    """The database down: the caller gets StoreUnavailableError naming what failed; neither it nor any log line
    carries the event's text (patient data; a peer's newline would forge a log line)."""
    secret = "DOE^JANE\nFORGED 2026-01-01 INFO audit ok"
    store = Store.from_url(f"postgresql+psycopg://radtrace@127.0.0.1:{free_port()}/none?connect_timeout=2")
    event = AuditEvent(EventType.INSTANCE_RECEIVED, Actor(user=secret), patient_id=secret, payload={"name": secret})
    with caplog.at_level(logging.DEBUG), pytest.raises(StoreUnavailableError) as raised:
        AuditRecorder(store).record(event)
    assert "recording audit events" in str(raised.value)
    for shown in (str(raised.value), caplog.text):
        assert "DOE^JANE" not in shown
        assert "FORGED" not in shown
    store.dispose()
