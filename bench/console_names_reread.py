"""What the worklist's re-read of rows under other character-set settings costs a page
(:func:`radtrace.console.worklist_sync.reread_names`): after a ``listener.sender_character_sets`` rule is set or
changed, each sync reads again up to ``NAMES_REREAD_LIMIT`` rows' headers; after the upgrade to migration 0020, rows of
studies no ruled AE sent are recorded in one UPDATE, unread. Since migration 0025 a row records its sender, and a rule
set for one AE reads again only that AE's rows, not every row.

``--films`` real JPEG-LS films (NEMA RG1, 2.7 MB) read by the pipeline (demo backend) among ``--studies`` seeded
rows (radtrace.testing.console.seed_worklist) with 3 audit events each; then (1) the films' rows marked as read
under other settings, one re-read of them all timed (per row, and for a full sync's limit); (2) every row marked
as the upgrade leaves it (NULL), the one UPDATE of the rows no ruled AE sent timed; (3) half the films sent by
CR_ROOM_3, half by DX_ROOM_1, a rule then set for CR_ROOM_3: the rows to read again (and syncs of 20) as rows without
their sender (NULL: every rule's digest, as before 0025) and as rows that record it, on the same rows, in one run.
SQLite, or PostgreSQL with --postgresql.

.venv/bin/python bench/console_names_reread.py [--studies 10000] [--films 20] [--postgresql]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from pydicom.uid import generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the console tests' helpers
sys.path.insert(0, str(Path(__file__).resolve().parent))

from console_pages import FILM, _audit_load, _store
from console_support import console_settings
from radtrace.config_listener import SenderCharset
from radtrace.console import worklist, worklist_sync
from radtrace.console.schema import ReviewItem
from radtrace.model.reader import StudyReader
from radtrace.store.models import Instance, Study
from radtrace.testing.ablation import load_film
from radtrace.testing.console import seed_worklist
from radtrace.worker.pipeline import Result, StudyPipeline
from worker_support import spool_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--films", type=int, default=20)
    parser.add_argument("--postgresql", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, _store(args.postgresql, Path(tmp)) as store:
        settings = console_settings(Path(tmp), store, sync_interval_s=3600)
        seed_worklist(store, args.studies)
        _audit_load(store, args.studies)
        reader = StudyReader(settings.model, data_dir=settings.data_dir)
        pipeline = StudyPipeline(settings, store, reader, worker="bench")
        films = []
        for n in range(args.films):
            [film] = load_film(FILM)
            film.AccessionNumber = f"ACC-BENCH-{n}"
            film.StudyInstanceUID, film.SeriesInstanceUID = generate_uid(), generate_uid()
            film.SOPInstanceUID = film.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            study_uid, number = spool_study(settings, store, [film])
            assert pipeline.process(study_uid, number).result is Result.REPORTED
            films.append(study_uid)
        worklist.sync_review_items(store, settings.spool_dir, listener=settings.listener)
        print(f"{store.engine.dialect.name}: {args.studies} seeded rows, {args.films} real films read")

        with store.session() as session:
            session.execute(sa.update(ReviewItem).values(names_read_as=worklist_sync.names_reading(settings.listener)))
            session.execute(sa.update(ReviewItem).where(ReviewItem.study_uid.in_(films)).values(names_read_as="other"))
        worklist_sync._NAMES_CURRENT.clear()
        started = time.perf_counter()
        read = worklist_sync.reread_names(store, settings.spool_dir, listener=settings.listener, limit=args.films)
        took = time.perf_counter() - started
        assert read == args.films, read
        per_row = took / args.films * 1000
        print(f"re-read of {args.films} rows: {took * 1000:.0f} ms, {per_row:.1f} ms a row; a sync's "
              f"{worklist_sync.NAMES_REREAD_LIMIT}: ~{per_row * worklist_sync.NAMES_REREAD_LIMIT:.0f} ms")  # fmt: skip

        with store.session() as session:
            session.execute(sa.update(ReviewItem).values(names_read_as=None))
        worklist_sync._NAMES_CURRENT.clear()
        started = time.perf_counter()
        worklist_sync._stamp_upgraded(store, settings.listener, worklist_sync.names_reading(settings.listener))
        took = time.perf_counter() - started
        print(f"upgrade: {args.studies + args.films} NULL rows recorded unread in {took * 1000:.0f} ms")

        # (3) one sender's rule set: the rows to read again, as rows without their sender (NULL, before migration
        # 0025: every rule's digest) and as rows that record it (each sender's digest), on the same rows
        senders = {uid: ("CR_ROOM_3", "DX_ROOM_1")[n % 2] for n, uid in enumerate(films)}
        with store.session() as session:
            for uid, sender in senders.items():
                study_id = sa.select(Study.id).where(Study.study_uid == uid).scalar_subquery()
                session.execute(sa.update(Instance).where(Instance.study_id == study_id).values(calling_ae=sender))
        ruled = settings.model_copy(
            update={
                "listener": settings.listener.model_copy(
                    update={"sender_character_sets": [SenderCharset(ae_title="CR_ROOM_3", actual="cp1256")]}
                )
            }
        )
        for label, recorded in (("without their sender (before)", False), ("recording their sender (after)", True)):
            with store.session() as session:
                session.execute(
                    sa.update(ReviewItem).values(
                        sender="" if recorded else None,
                        names_read_as=worklist_sync.names_reading(settings.listener, "" if recorded else None),
                    )
                )
                for uid, sender in senders.items() if recorded else ():
                    session.execute(
                        sa.update(ReviewItem)
                        .where(ReviewItem.study_uid == uid)
                        .values(sender=sender, names_read_as=worklist_sync.names_reading(settings.listener, sender))
                    )
                count = sa.select(sa.func.count()).select_from(ReviewItem)
                stale = session.scalar(count.where(worklist_sync._stale(ruled.listener)))
            worklist_sync._NAMES_CURRENT.clear()
            started, syncs, read = time.perf_counter(), 0, 0
            reread = worklist_sync.reread_names
            while (batch := reread(store, settings.spool_dir, listener=ruled.listener)) or syncs == 0:
                syncs, read = syncs + 1, read + batch
                if syncs >= 3:  # enough to time a sync's batch
                    break
            took = (time.perf_counter() - started) / max(1, syncs)
            print(
                f"rule set for CR_ROOM_3 ({len(films) // 2 + len(films) % 2} of the {len(films)} films), rows "
                f"{label}: {stale:,} to read again, {-(-stale // worklist_sync.NAMES_REREAD_LIMIT):,} syncs of "
                f"{worklist_sync.NAMES_REREAD_LIMIT}; {took * 1000:.0f} ms a sync ({read} read in {syncs})"
            )


if __name__ == "__main__":
    main()
