"""The hash chain: each row's canonical form, its SHA-256, streaming verification and signed checkpoints.

A row's hash covers every column but ``hash`` itself, including ``prev_hash``, so editing, deleting,
reordering or inserting a row breaks the chain at that row. Someone who can rewrite *and rehash* the
whole tail defeats any in-database chain; a checkpoint (seq, hash) signed with an HMAC key kept
outside the database detects that up to the checkpoint (what is and is not covered:
:mod:`radtrace.audit.checkpoints`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import sqlalchemy as sa

from radtrace.audit.events import canonical_json
from radtrace.audit.schema import AuditEventRow
from radtrace.errors import PermanentError
from radtrace.store.base import utc_now
from radtrace.store.engine import Store, is_postgresql, translate_db_error

__all__ = [
    "GENESIS_HASH",
    "HASHED_COLUMNS",
    "ChainBreak",
    "Checkpoint",
    "Verification",
    "content_intact",
    "hashed_columns",
    "read_checkpoint",
    "row_hash",
    "verify_chain",
    "write_checkpoint",
]

GENESIS_HASH: Final = "0" * 64
HASHED_COLUMNS: Final = (
    "seq", "recorded_at", "event_type", "dicom_event_id", "outcome", "actor_ae", "actor_host", "actor_user",
    "actor_process", "study_uid", "accession", "patient_id", "model_name", "model_version", "labels", "prev_hash",
    "payload",
)  # fmt: skip
_RECORDED_AT: Final = HASHED_COLUMNS.index("recorded_at")
_PREV_HASH: Final = HASHED_COLUMNS.index("prev_hash")
_PAYLOAD: Final = HASHED_COLUMNS.index("payload")
_HASH: Final = len(HASHED_COLUMNS)  # the stored hash follows the hashed columns in verify's query
VERIFY_BATCH_ROWS: Final = 10_000
#: Broken rows a verification lists (all are counted): enough to see each place the log was tampered with, while
#: rows renumbered after an insertion or a deletion, each broken, do not fill the report.
LISTED_BREAKS: Final = 20
MAX_CHECKPOINT_BYTES: Final = 64 * 1024


def _timestamp(value: datetime) -> str:
    return (value if value.tzinfo is UTC else value.astimezone(UTC)).isoformat(timespec="microseconds")


def row_hash(values: sa.RowMapping | Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a row's canonical form (see :func:`_hash_columns`)."""
    return _hash_columns([values[name] for name in HASHED_COLUMNS])


def _hash_columns(columns: Sequence[Any]) -> str:
    """Hash the hashed columns given in ``HASHED_COLUMNS`` order.

    The canonical form encodes each column but the payload as a netstring-like field, ``<length>:<text>``
    (``~`` for NULL; the time as ISO 8601 UTC with microseconds; integers in decimal), joined by ``,``;
    then a newline and the payload's stored canonical JSON text, hashed as stored rather than re-encoded.
    Every field carries its own length, so no value can be read as another (and this is several times
    cheaper per row than encoding the header as JSON, which verification speed depends on).
    """
    fields = []
    for index in range(_PAYLOAD):
        value = columns[index]
        if value is None:
            fields.append("~")
            continue
        # verify_chain has the database render the time canonically already (a str); rows read
        # through the ORM carry a datetime.
        text = _timestamp(value) if isinstance(value, datetime) else str(value)
        fields.append(f"{len(text)}:{text}")
    # str(): a payload stored as anything but text (SQLite keeps any type) must fail the comparison, not crash it.
    canonical = ",".join(fields) + "\n" + str(columns[_PAYLOAD])
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChainBreak:
    """A row at which the chain does not hold, and why."""

    seq: int
    problem: str


@dataclass(frozen=True)
class Verification:
    """The result of walking the chain."""

    rows_checked: int
    head_seq: int
    head_hash: str
    first_break: ChainBreak | None
    checkpoint_problem: str | None = None
    #: The highest seq a signed checkpoint vouched for and the row still matched (``None``: no checkpoint held).
    anchored_seq: int | None = None
    checkpoints_checked: int = 0
    #: The broken rows, in seq order: the first :data:`LISTED_BREAKS` (``first_break`` is the first of them) ...
    breaks: tuple[ChainBreak, ...] = ()
    #: ... of this many (rows named by no break in between them are intact and chained).
    broken_rows: int = 0

    @property
    def ok(self) -> bool:
        """Whether the chain and (if given) the checkpoint both hold."""
        return self.first_break is None and self.checkpoint_problem is None


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that row ``seq`` had hash ``hash`` at ``created_at``."""

    seq: int
    hash: str
    created_at: str

    def signature(self, key: bytes) -> str:
        """HMAC-SHA256 over the checkpoint's canonical form."""
        message = canonical_json({"seq": self.seq, "hash": self.hash, "created_at": self.created_at})
        return hmac.new(key, message.encode("utf-8"), hashlib.sha256).hexdigest()


def verify_chain(
    store: Store,
    *,
    checkpoint: Checkpoint | None = None,
    checkpoints: Sequence[Checkpoint] = (),
    progress: Callable[[int], None] | None = None,
) -> Verification:
    """Walk the audit table in ``seq`` order in constant memory and report the broken rows (the first
    :data:`LISTED_BREAKS` of them, and how many): a row broken after the first is still found, so a log already known
    to be broken at one row still shows a later edit, deletion or reordering (before, the walk named only the first
    break, and every later one went unseen behind it for good).

    Checks, per row: ``seq`` follows the previous one with no gap; ``prev_hash`` equals the
    previous row's hash; the stored hash equals the recomputed one. With ``checkpoint`` (or several,
    ``checkpoints``), also checks that each row a checkpoint names still carries the signed hash: a
    rewrite of rows up to a checkpoint, hashes recomputed or not, or rows removed from the end below it,
    then shows. ``anchored_seq`` is the highest checkpoint that held.
    """
    wanted = [*checkpoints, *([checkpoint] if checkpoint is not None else [])]
    table = AuditEventRow.__table__
    query = sa.select(*hashed_columns(store)).order_by(table.c.seq)
    expected_seq, previous_hash, previous_prev_hash, checked = 1, GENESIS_HASH, None, 0
    breaks: list[ChainBreak] = []
    broken_rows = 0

    def broken(found: ChainBreak | None) -> None:
        nonlocal broken_rows
        # One row can break the checks of the row after it too (a row moved breaks its own hash and the next row's
        # link to it): it is named once.
        if found is None or (breaks and breaks[-1].seq == found.seq):
            return
        broken_rows += 1
        if len(breaks) < LISTED_BREAKS:
            breaks.append(found)

    # A checkpoint of the empty log names seq 0, which no row has: its hash is the genesis hash.
    found: dict[int, str] = {0: GENESIS_HASH}
    named = {signed.seq for signed in wanted}
    try:
        with store.engine.connect() as connection:
            options: dict[str, Any] = {"yield_per": VERIFY_BATCH_ROWS}
            if is_postgresql(store.engine):
                options["stream_results"] = True  # server-side cursor: constant memory
            result = connection.execution_options(**options).execute(query)
            for row in result:
                checked += 1
                seq = row[0]
                if not isinstance(seq, int):  # SQLite keeps a text seq, and sorts it after every number
                    broken(ChainBreak(expected_seq, f"a row has seq {seq!r}, not a number (row edited)"))
                    continue
                broken(_check_row(row, expected_seq, previous_hash, previous_prev_hash))
                if seq in named:
                    found[seq] = row[_HASH]
                expected_seq, previous_hash, previous_prev_hash = seq + 1, row[_HASH], row[_PREV_HASH]
                if progress is not None and checked % VERIFY_BATCH_ROWS == 0:
                    progress(checked)
    except sa.exc.SQLAlchemyError as exc:
        raise translate_db_error(exc, "verifying the audit chain") from exc
    problems, anchored = [], None
    for signed in sorted(wanted, key=lambda signed: signed.seq):
        stored = found.get(signed.seq)
        if stored is None:
            problems.append(
                f"row {signed.seq} named by the signed checkpoint of {signed.created_at} no longer exists: "
                f"rows were removed from the end (the log ends at seq {expected_seq - 1})"
            )
        elif stored != signed.hash:
            problems.append(
                f"row {signed.seq} has hash {stored[:16]}…, the signed checkpoint of {signed.created_at} says "
                f"{signed.hash[:16]}…: the chain was rewritten after the checkpoint"
            )
        else:
            anchored = signed.seq
    return Verification(
        checked, expected_seq - 1, previous_hash, breaks[0] if breaks else None, problems[0] if problems else None,
        anchored, len(wanted), breaks=tuple(breaks), broken_rows=broken_rows,
    )  # fmt: skip


def hashed_columns(store: Store) -> list[sa.ColumnElement[Any]]:
    """The columns a row's hash covers, in order, then its stored ``hash``: the time rendered canonically by the
    database (a time edited into text on SQLite is read as that text, never parsed)."""
    table = AuditEventRow.__table__
    columns: list[sa.ColumnElement[Any]] = [table.c[name] for name in (*HASHED_COLUMNS, "hash")]
    columns[_RECORDED_AT] = _canonical_time_sql(store, table.c.recorded_at)
    return columns


def content_intact(row: Sequence[Any]) -> bool:
    """Whether a row read with :func:`hashed_columns` still matches its stored hash."""
    return _hash_columns(row) == str(row[_HASH])


def _canonical_time_sql(store: Store, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """``recorded_at`` rendered by the database exactly as :func:`_timestamp` would (ISO 8601, UTC, µs).

    Parsing a timestamp per row and formatting it again is a large share of verification's cost.
    """
    if is_postgresql(store.engine):
        return sa.func.to_char(
            sa.func.timezone("UTC", column), sa.literal_column('\'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"\'')
        )
    # SQLAlchemy stores SQLite DATETIME as 'YYYY-MM-DD HH:MM:SS.ffffff' (always six fraction digits), in UTC here.
    return sa.func.replace(sa.type_coerce(column, sa.String), " ", "T").concat("+00:00")


def _check_row(
    row: Sequence[Any], expected_seq: int, previous_hash: str, previous_prev_hash: str | None
) -> ChainBreak | None:
    seq = row[0]
    if seq < expected_seq:  # only a row before seq 1 can sort here (seq is the primary key)
        return ChainBreak(seq, f"row {seq} precedes row 1, the first row of the chain (row inserted)")
    if seq != expected_seq:
        gap = (
            f"row {expected_seq} is missing"
            if seq == expected_seq + 1
            else f"rows {expected_seq} to {seq - 1} are missing"
        )
        return ChainBreak(expected_seq, f"sequence gap: {gap}")
    content_ok = _hash_columns(row) == row[_HASH]
    if row[_PREV_HASH] != previous_hash:
        if seq > 1 and row[_PREV_HASH] == previous_prev_hash:
            # This row and the previous one chain onto the same predecessor: the previous row was slipped
            # in between them (and the rows after it renumbered), whatever hash it was given.
            return ChainBreak(
                seq - 1,
                f"row inserted: rows {seq - 1} and {seq} both chain to the row before {seq - 1}",
            )
        if content_ok and seq > 1:
            # This row is intact and still chained to the hash the previous row had when this one was
            # written: the previous row changed since, and its own hash was recomputed to hide it.
            return ChainBreak(
                seq - 1,
                f"row edited and its hash recomputed: row {seq} is chained to its former hash "
                "(or rows were removed or reordered here)",
            )
        return ChainBreak(seq, "prev_hash does not match the previous row's hash (row removed or reordered)")
    if not content_ok:
        return ChainBreak(seq, "content does not match its hash (row edited" + _edited_detail(row) + ")")
    return None


_CANONICAL_TIME: Final = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}\+00:00")


def _edited_detail(row: Sequence[Any]) -> str:
    """What the walk can tell of an edit beyond the hash: a time that is no longer a time (SQLite keeps any
    text, and query and export then show it as unreadable)."""
    stored = row[_RECORDED_AT]
    if isinstance(stored, str) and _CANONICAL_TIME.fullmatch(stored):
        return ""
    shown = stored.removesuffix("+00:00").replace("T", " ", 1) if isinstance(stored, str) else stored
    try:
        datetime.fromisoformat(str(shown))
    except ValueError:
        return f": recorded_at {shown!r} is not a time"
    return ""


def write_checkpoint(store: Store, key: bytes, path: Path, *, head: tuple[int, str] | None = None) -> Checkpoint:
    """Sign ``head`` (seq, hash), by default the current head, with ``key`` and write it to ``path`` as JSON."""
    if head is None:
        table = AuditEventRow.__table__
        with store.session("reading the audit head") as session:
            row = session.execute(sa.select(table.c.seq, table.c.hash).order_by(table.c.seq.desc()).limit(1)).first()
        head = (row[0], row[1]) if row else (0, GENESIS_HASH)
    seq, head_hash = head
    checkpoint = Checkpoint(seq=seq, hash=head_hash, created_at=_timestamp(utc_now()))
    document = {
        "radtrace_audit_checkpoint": 1,
        "seq": checkpoint.seq,
        "hash": checkpoint.hash,
        "created_at": checkpoint.created_at,
        "hmac_sha256": checkpoint.signature(key),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    except OSError as exc:
        raise PermanentError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from exc
    return checkpoint


def read_checkpoint(path: Path, key: bytes) -> Checkpoint:
    """Read a checkpoint file and check its signature; a forged or damaged one is refused."""
    try:
        with path.open("rb") as handle:
            text = handle.read(MAX_CHECKPOINT_BYTES + 1)
        if len(text) > MAX_CHECKPOINT_BYTES:
            raise ValueError(f"larger than {MAX_CHECKPOINT_BYTES} bytes, which no checkpoint is")
        document = json.loads(text.decode("utf-8"))
        checkpoint = Checkpoint(seq=int(document["seq"]), hash=str(document["hash"]),
                                created_at=str(document["created_at"]))  # fmt: skip
        signature = str(document["hmac_sha256"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PermanentError(f"checkpoint {path} is unreadable: {exc}") from exc
    if not hmac.compare_digest(signature, checkpoint.signature(key)):
        raise PermanentError(f"checkpoint {path} has an invalid signature (wrong key or edited file)")
    return checkpoint
