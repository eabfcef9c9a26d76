"""A withdrawal that could not be built (its draft's payload unreadable) is a failed row with nothing to send:
`radtrace dispatch retry` leaves it failed and says why, and no delivery of any kind sends an empty payload.
Before, the retry made it pending and the file drop wrote an empty ``<uid>.withdrawal.hl7``: the draft looked
withdrawn while nothing was (found in review)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from file_drop_support import oru_withdrawal_unbuildable
from radtrace.audit.events import Actor
from radtrace.errors import DispatchRejectedError
from radtrace.reporting.dispatch import withdrawals
from radtrace.reporting.dispatch.payloads import PayloadFiles
from radtrace.reporting.dispatch.redelivery import redeliver_failed
from radtrace.store.engine import Store
from radtrace.store.models import OutboxMessage, OutboxState

pytestmark = pytest.mark.integration


def test_retrying_a_withdrawal_that_could_not_be_built_never_sends_an_empty_payload(
    store: Store, tmp_path: Path
) -> None:
    uid, dropped = oru_withdrawal_unbuildable(store, tmp_path, study_key="w" * 16, accession="RTACC000003")
    outbox, drop = dropped.outbox, dropped.drop
    withdrawals.sweep(outbox)
    outbox.deliver_due()
    target = drop / f"{uid}.withdrawal.hl7"
    assert not target.exists()
    # the operator follows the failure's advice: radtrace dispatch retry <destination>
    done = redeliver_failed(store, outbox.settings, str(target), Actor(user="ops"))
    assert done.outbox_ids == []
    assert len(done.not_built) == 1
    outbox.deliver_due()
    assert not target.exists(), "a withdrawal that was never built was sent"
    with store.session() as session:
        state, error = session.execute(
            sa.select(OutboxMessage.state, OutboxMessage.last_error).where(OutboxMessage.id == done.not_built[0])
        ).one()
    assert state is OutboxState.FAILED
    assert error.startswith(withdrawals.NOT_BUILT_PREFIX)


def test_an_empty_payload_is_never_sent(tmp_path: Path) -> None:
    payloads = PayloadFiles(tmp_path)
    relative, digest = payloads.store(b"", ".hl7", payloads.staged())
    with pytest.raises(DispatchRejectedError, match="is empty: there is nothing to send"):
        payloads.read(relative, digest)
