"""Server time of the review console's pages at scale: the worklist's filters and last page, next study, a study
page (also one with a long decision history), recording a finding's decision, and the study page's pictures of
an image (as the model read it, and the original) for the synthetic study and for a real JPEG-LS film (NEMA RG1,
2.7 MB), over a worklist of N studies with audit events for each (SQLite, and PostgreSQL with --postgresql).

Medians of repeated requests through the ASGI app (the code path uvicorn runs, without the socket), and of the
worklist's sync with nothing new, on one real study read by the pipeline (demo backend) among N seeded ones
(radtrace.testing.console.seed_worklist) and 3 audit events per seeded study. The peer is the console's stylesheet
through the same app and session: what any request costs before a page reads anything. These are the figures
tests/integration/test_console_scale.py once asserted under 300 ms; it now checks what is behaviour (the counts,
each filter's page read from its own index by the query plan).

.venv/bin/python bench/console_pages.py --studies 10000 [--decisions 300] [--postgresql]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the console tests' helpers

from console_support import (
    add_user,
    console_client,
    console_settings,
    csrf_of,
    median_ms,
    page_call,
    reported_study,
    sign_in,
    study_path,
)
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.console.decisions import decide_finding
from radtrace.console.review import load_review
from radtrace.console.worklist import sync_review_items
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.testing.ablation import load_film
from radtrace.testing.console import seed_worklist
from radtrace.worker.pipeline import Result, StudyPipeline
from worker_support import spool_study

#: A real film whose pixel data is compressed (JPEG-LS near-lossless): every picture of it decodes the file.
FILM = Path(__file__).resolve().parents[1] / "tests/data/real-cxr/nema-rg1-cr-chest-pa-mono1-jpegls-near-lossless.dcm"


@contextlib.contextmanager
def _store(postgresql: bool, directory: Path) -> Iterator[Store]:
    if postgresql:
        from radtrace.testing.services import temporary_postgres_database

        with temporary_postgres_database("radtrace_bench") as url:
            store = Store.from_url(url)
            try:
                upgrade(store)
                yield store
            finally:
                store.engine.dispose()
    else:
        store = Store.from_url(f"sqlite:///{directory / 'radtrace.db'}")
        upgrade(store)
        yield store


def _audit_load(store: Store, studies: int) -> None:
    """Three audit events per seeded study (as opened, viewed and decided ones add), so the study page's reads of
    the audit log run over a table of realistic size."""
    recorder = AuditRecorder(store)
    events = [
        AuditEvent(kind, Actor(user="dr.load"), study_uid=f"2.25.{i}", payload={"revision": 1})
        for i in range(studies)
        for kind in (EventType.STUDY_OPENED, EventType.IMAGE_VIEWED, EventType.FINDING_ASSESSED)
    ]
    for start in range(0, len(events), 2000):
        recorder.record_many(events[start : start + 2000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--decisions", type=int, default=300, help="decisions recorded on the long-history study")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--postgresql", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, _store(args.postgresql, Path(tmp)) as store:
        started = time.perf_counter()
        settings = console_settings(Path(tmp), store, sync_interval_s=3600)
        seed_worklist(store, args.studies)
        _audit_load(store, args.studies)
        reader = StudyReader(settings.model, data_dir=settings.data_dir)
        fresh, busy = (reported_study(settings, store, reader, seed=seed) for seed in (1, 2))
        [film] = load_film(FILM)
        film.AccessionNumber = "ACC-BENCH-FILM"
        film_uid, number = spool_study(settings, store, [film])
        read = StudyPipeline(settings, store, reader, worker="bench").process(film_uid, number)
        assert read.result is Result.REPORTED, read
        sync_review_items(store, settings.spool_dir)
        review = load_review(store, busy, 1)
        assert review is not None
        actor = Actor(user="dr.busy")
        for n in range(args.decisions):
            finding = review.findings[n % len(review.findings)]
            decide_finding(store, review, actor, finding.label, ("accept", "reject")[n % 2], None, f"note {n}")
        add_user(store, "dr.bench", "radiologist")
        print(f"{store.engine.dialect.name}: {args.studies} studies, {3 * args.studies} audit events, "
              f"{args.decisions} decisions on one study (set up in {time.perf_counter() - started:.0f} s)")  # fmt: skip
        with console_client(store, settings) as client:
            sign_in(client, "dr.bench")

            last = -(-(args.studies + 2) // settings.console.page_size)
            url, film_url = study_path(store, fresh), study_path(store, film_uid)
            label = load_review(store, fresh, 1).findings[0].label  # type: ignore[union-attr]

            def decide() -> object:
                page = client.get(url).text
                answer = client.post(f"{url}/findings", data={"csrf_token": csrf_of(page), "label": label,
                                     "decision": "accept", "comment": str(time.perf_counter())},
                                     follow_redirects=False)  # fmt: skip
                assert answer.status_code == 303, answer.status_code
                return answer

            figures = {
                "worklist unassessed, page 1": page_call(client, "/console/worklist"),
                f"worklist all, last page ({last})": page_call(client, f"/console/worklist?filter=all&page={last}"),
                "worklist flagged, page 1": page_call(client, "/console/worklist?filter=flagged"),
                "worklist mine, page 1": page_call(client, "/console/worklist?filter=mine"),
                "next study": page_call(client, "/console/next"),
                "study page": page_call(client, url),
                f"study page, {args.decisions} decisions": page_call(client, study_path(store, busy)),
                "finding decision (page + POST)": decide,
                "image as the model read it (synthetic)": page_call(client, f"{url}/images/0/prepared.png"),
                "image, original (synthetic)": page_call(client, f"{url}/images/0/original.png"),
                "image as the model read it (JPEG-LS film)": page_call(client, f"{film_url}/images/0/prepared.png"),
                "image, original (JPEG-LS film)": page_call(client, f"{film_url}/images/0/original.png"),
                "worklist sync, nothing new": lambda: sync_review_items(store, settings.spool_dir),
                "peer: the stylesheet (the app's floor)": page_call(client, "/console/static/console.css"),
            }
            for what, call in figures.items():
                print(f"  {what:<40} {median_ms(call, args.repeat):7.1f} ms")


if __name__ == "__main__":
    main()
