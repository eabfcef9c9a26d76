"""A worklist of any size, written straight into the tables (for the console's scale test and benchmark).

:func:`seed_worklist` inserts ``count`` studies, each with one reported revision and its ``review_items`` row,
in batches with core inserts: about one in twenty STAT, one in eight flagged, one in four already assessed,
reported over the last 30 days. No audit events and no spool: the worklist reads only ``review_items``.
"""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from radtrace.console.schema import ReviewItem
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.models import Revision, Study

__all__ = ["seed_worklist"]

_LABELS = ("Cardiomegaly", "Pleural Effusion", "Lung Opacity", "Atelectasis", "Support Devices", "Edema")
_FLAGS = ("ap-portable", "view-unknown", "truncated", "text-sanitised")


def seed_worklist(store: Store, count: int, *, batch: int = 5000, seed: int = 7) -> None:
    """Add ``count`` reported studies to the worklist tables (see the module doc)."""
    chance = random.Random(seed)
    now = utc_now()
    with store.session("seeding a worklist") as session:
        first = (session.scalar(sa.select(sa.func.max(Study.id))) or 0) + 1
        first_revision = (session.scalar(sa.select(sa.func.max(Revision.id))) or 0) + 1
    for start in range(0, count, batch):
        studies: list[dict[str, Any]] = []
        revisions: list[dict[str, Any]] = []
        items: list[dict[str, Any]] = []
        for n in range(start, min(count, start + batch)):
            study_id, revision_id = first + n, first_revision + n
            uid = f"1.2.826.0.1.3680043.10.999.{study_id}"
            reported = now - timedelta(seconds=chance.uniform(60, 30 * 86400))
            stat = chance.random() < 0.05
            flags = [chance.choice(_FLAGS)] if chance.random() < 0.125 else []
            assessed = chance.random() < 0.25
            studies.append({"id": study_id, "study_uid": uid, "study_key": f"{study_id:016x}",
                            "accession": f"SEED{study_id:08d}", "created_at": reported})  # fmt: skip
            revisions.append({"id": revision_id, "study_id": study_id, "number": 1, "state": "reported",
                              "attempts": 1, "opened_at": reported, "reported_at": reported, "updated_at": reported,
                              "priority": "stat" if stat else "routine"})  # fmt: skip
            items.append({
                "revision_id": revision_id, "study_uid": uid, "revision": 1, "rank": 0 if stat else 1,
                "reported_at": reported, "superseded": False, "patient_name": f"SEED^PATIENT^{study_id}",
                "patient_id": f"S{study_id:09d}", "patient_age": f"{chance.randint(18, 95):03d}Y",
                "patient_sex": chance.choice("FM"), "accession": f"SEED{study_id:08d}", "study_date": "20261201",
                "view": chance.choice(("PA", "AP", "PA", None)),
                "findings": ",".join(chance.sample(_LABELS, chance.randint(0, 3))), "flags": ",".join(flags),
                "flagged": bool(flags), "model_name": "NV-Reason-CXR-3B", "sr_sop_instance_uid": f"{uid}.9",
                "opened_by": "dr.seed" if assessed else None, "assessed": assessed,
                "decision": "accepted" if assessed else None, "decided_by": "dr.seed" if assessed else None,
                "decided_at": now if assessed else None,
            })  # fmt: skip
        with store.session("seeding a worklist") as session:
            session.execute(sa.insert(Study), studies)
            session.execute(sa.insert(Revision), revisions)
            session.execute(sa.insert(ReviewItem), items)
    with store.engine.connect() as connection:  # fresh planner statistics, as a live database would have
        if connection.dialect.name == "postgresql":  # explicit ids: move the sequences past them
            connection.execute(sa.text("SELECT setval(pg_get_serial_sequence('studies', 'id'), max(id)) FROM studies"))
            connection.execute(
                sa.text("SELECT setval(pg_get_serial_sequence('revisions', 'id'), max(id)) FROM revisions")
            )
        connection.execute(sa.text("ANALYZE"))
        connection.commit()
