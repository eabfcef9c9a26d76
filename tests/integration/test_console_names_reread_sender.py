"""A change to one sender's character-set rule reads again only that sender's worklist rows.

Rows recorded a digest of every ``listener.sender_character_sets`` rule (``names_read_as``, migration 0020), so a
site that set, changed or removed the rule for one AE had the console read every stored row's header again (20 a
sync: a 10,000-row list took 500 syncs). Rows now record their sender (``review_items.sender``, the calling AE of the
image the header was read from, migration 0025) and the digest of that sender's rules only. Rows added before the
migration (sender NULL) are compared with every rule's digest, as before, and record their sender when read again.
Counted: the rows :func:`radtrace.console.worklist.reread_names` reads again. Studies read by the pipeline (demo
backend), their instances' calling AE set as the listener records it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from console_support import console_settings, reported_study
from radtrace.config import Settings
from radtrace.config_listener import SenderCharset
from radtrace.console import worklist, worklist_sync
from radtrace.console.schema import ReviewItem
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.models import Instance, Study

pytestmark = pytest.mark.integration

SENDERS = ["CR_ROOM_3", "CR_ROOM_3", "DX_ROOM_1", "DX_ROOM_1", "DX_ROOM_1", "CT_ROOM_2"]


def _with_rules(settings: Settings, *rules: tuple[str, str]) -> Settings:
    listener = settings.listener.model_copy(
        update={"sender_character_sets": [SenderCharset(ae_title=ae, actual=actual) for ae, actual in rules]}
    )
    return settings.model_copy(update={"listener": listener})


def _reread(store: Store, settings: Settings) -> int:
    worklist_sync._NAMES_CURRENT.clear()  # a process started under the new settings
    read = worklist.reread_names(store, settings.spool_dir, listener=settings.listener, limit=100)
    assert worklist.reread_names(store, settings.spool_dir, listener=settings.listener, limit=100) == 0
    return read


def test_a_rule_change_reads_again_only_its_sender_s_rows(tmp_path: Path, store: Store) -> None:
    settings = console_settings(tmp_path, store)
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    studies = [reported_study(settings, store, reader, seed=seed) for seed in range(len(SENDERS))]
    with store.session("recording the senders", immediate=True) as session:
        for study_uid, sender in zip(studies, SENDERS, strict=True):
            study_id = sa.select(Study.id).where(Study.study_uid == study_uid).scalar_subquery()
            session.execute(sa.update(Instance).where(Instance.study_id == study_id).values(calling_ae=sender))
    worklist.sync_review_items(store, settings.spool_dir, listener=settings.listener)

    ruled = _with_rules(settings, ("CR_ROOM_3", "cp1256"))
    assert _reread(store, ruled) == 2  # CR_ROOM_3's rows; 6 (every row) before
    with store.session() as session:
        recorded = dict(session.execute(sa.select(ReviewItem.study_uid, ReviewItem.sender)).all())
    assert [recorded[uid] for uid in studies] == SENDERS
    changed = _with_rules(settings, ("CR_ROOM_3", "ISO_IR 127"))
    assert _reread(store, changed) == 2
    another = _with_rules(settings, ("CR_ROOM_3", "ISO_IR 127"), ("DX_ROOM_1", "cp1251"))
    assert _reread(store, another) == 3  # DX_ROOM_1's
    nobody = _with_rules(settings, ("CR_ROOM_3", "ISO_IR 127"), ("DX_ROOM_1", "cp1251"), ("MR_ROOM_9", "cp1256"))
    assert _reread(store, nobody) == 0  # an AE that sent no row
    assert _reread(store, _with_rules(settings, ("DX_ROOM_1", "cp1251"), ("MR_ROOM_9", "cp1256"))) == 2  # removed
    dx_only = _with_rules(settings, ("DX_ROOM_1", "cp1251"))
    assert _reread(store, dx_only) == 0  # MR_ROOM_9's removed: it sent no row

    # A row added before the sender was recorded (NULL) is compared with every rule's digest, as before: any rule's
    # change reads it again, once, and it then records its sender
    ct_row = studies[SENDERS.index("CT_ROOM_2")]
    with store.session("a row as the upgrade leaves it", immediate=True) as session:
        session.execute(
            sa.update(ReviewItem)
            .where(ReviewItem.study_uid == ct_row)
            .values(sender=None, names_read_as=worklist.names_reading(dx_only.listener))
        )
    assert _reread(store, dx_only) == 0  # read under these settings already
    both = _with_rules(settings, ("DX_ROOM_1", "cp1251"), ("CR_ROOM_3", "cp1256"))
    assert _reread(store, both) == 3  # CR_ROOM_3's 2 and the NULL row
    with store.session() as session:
        assert session.scalar(sa.select(ReviewItem.sender).where(ReviewItem.study_uid == ct_row)) == "CT_ROOM_2"
    assert _reread(store, _with_rules(settings, ("DX_ROOM_1", "cp1251"), ("CR_ROOM_3", "ISO_IR 127"))) == 2  # CR's only
