"""The fault suite: radtrace in its production shape (``radtrace serve`` on PostgreSQL and Redis, Orthanc as
the PACS, an MLLP receiver as the RIS) while something fails, then :func:`check_invariants` at the end.

dcmtk's storescu (or, to die mid-association, a pynetdicom SCU) plays the PACS's router and sends the study
straight to radtrace's listener, so each test controls exactly when instances arrive; the SRs go to Orthanc
(the PACS-down test stops and restarts it on the same storage and ports). Servers a test restarts (PostgreSQL, Redis)
are private to it (:mod:`private_servers`); the others are the shared ones with a private database and key
prefix. Timings are shortened by settings (:func:`pipeline_support.service_env`).

CI runs the kills and restarts (worker, serve, listener, Redis, PostgreSQL); six cases whose path an integration test
also takes run only with ``RADTRACE_FULL_FAULTS=1`` (about 2.5 minutes): Redis flushed while it runs (Redis restarted
empty loses the same keys and also drops every connection), the PACS and the RIS down for a while (the outbox's retry
until a peer is back: ``test_dispatch_outbox``'s RIS down then up, the same retry for every kind, and
``test_dispatch_cstore``'s PACS nobody listens on; a revision reported, not dispatched, while its delivery waits, and
dispatched once it is sent: ``test_dispatch_destination_hold``), draft processes killed again and again
(``test_worker_drafting``), the same study sent twice (``test_listener_faults``) and images after the SR
(``test_listener_completion``, ``test_dispatch_outbox``'s later revision).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association

from mllp_support import mllp_receiver
from orthanc_support import Orthanc, running_orthanc
from pipeline_invariants import RevisionSeen, check_invariants
from pipeline_support import Service, running_service, service_env
from private_servers import private_postgres, private_redis
from radtrace.dicom_listener.dcmtk import echoscu, storescu
from radtrace.dicom_listener.scu import close_socket
from radtrace.store.models import Job, OutboxMessage, RevisionState
from radtrace.testing.services import RedisNamespace, free_port
from radtrace.testing.studies import ImageSpec, StudySpec, make_image, make_study, write_study
from serve_support import alive, descendants, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
_FULL_ONLY = pytest.mark.skipif(os.environ.get("RADTRACE_FULL_FAULTS") != "1", reason="set RADTRACE_FULL_FAULTS=1")


def _send(files: list[Path], port: int) -> None:
    sent = storescu(files, port)
    assert sent.returncode == 0, sent.stdout + sent.stderr


def _uids(datasets: list[Dataset]) -> list[str]:
    return sorted(str(ds.SOPInstanceUID) for ds in datasets)


def _audit_types(service: Service) -> list[str]:
    engine = sa.create_engine(service.store_url)
    try:
        with engine.connect() as connection:
            return list(connection.scalars(sa.text("SELECT event_type FROM audit_events ORDER BY seq")))
    finally:
        engine.dispose()


def _outbox(service: Service) -> list[tuple[str, str, int]]:
    """(kind, state, attempts) of every outbox row."""
    engine = sa.create_engine(service.store_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.select(OutboxMessage.kind, OutboxMessage.state, OutboxMessage.attempts).order_by(OutboxMessage.id)
            ).all()
    finally:
        engine.dispose()
    return [(kind, str(state), attempts) for kind, state, attempts in rows]


def _env(tmp_path: Path, model_dir: Path, store_url: str, broker_url: str, prefix: str, listener_port: int,
         pacs: Orthanc, ris_port: int, **overrides: str) -> dict[str, str]:  # fmt: skip
    return service_env(
        tmp_path / "radtrace", store_url=store_url, broker_url=broker_url, key_prefix=prefix, model_dir=model_dir,
        listener_port=listener_port, pacs_port=pacs.dicom_port, ris_port=ris_port, **overrides,
    )  # fmt: skip


def test_worker_killed_mid_inference_is_taken_over_and_the_study_still_gets_one_sr(
    tmp_path: Path, tiny_model_dir: Path, postgres_url: str, redis_namespace: RedisNamespace
) -> None:
    study = make_study(StudySpec(seed=101))
    study_uid = str(study[0].StudyInstanceUID)
    port = free_port()
    with mllp_receiver() as ris, running_orthanc(tmp_path / "orthanc") as pacs:
        env = _env(tmp_path, tiny_model_dir, postgres_url, redis_namespace.url, redis_namespace.prefix, port, pacs,
                   ris.port, RADTRACE_BROKER__CLAIM_TIMEOUT_S="8")  # fmt: skip
        del env["RADTRACE_MODEL__MAX_NEW_TOKENS"]  # from the file: the worker's next life reads it again
        config = tmp_path / "radtrace.toml"
        config.write_text("[model]\nmax_new_tokens = 8000\n")  # a generation of many seconds, to kill it inside
        with running_service(env, tmp_path / "serve.log", config=config) as service:
            _send(write_study(study, tmp_path / "study"), port)
            service.wait_for("the revision processing",
                             lambda seen: any(r.state is RevisionState.PROCESSING for r in seen), 60)  # fmt: skip
            time.sleep(0.5)  # inside generate
            config.write_text("[model]\nmax_new_tokens = 48\n")  # the attempt after the kill is quick
            killed = service.kill("worker")
            assert service.revisions(study_uid)[0].state is RevisionState.PROCESSING

            [revision] = service.wait_settled(study_uid, timeout=90)
            assert revision.state is RevisionState.DISPATCHED, revision.reason
            assert revision.attempts == 2  # the lost attempt counts
            assert service.child("worker") != killed  # serve restarted it
            engine = sa.create_engine(service.store_url)
            try:
                with engine.connect() as connection:
                    jobs = connection.execute(sa.select(Job.state, Job.error).order_by(Job.attempt)).all()
            finally:
                engine.dispose()
            assert [str(state) for state, _ in jobs] == ["failed", "succeeded"]
            assert "claim expired" in str(jobs[0][1])
            observed = check_invariants(service.store_url, pacs, service.env, accepted=_uids(study), ris=ris)
            assert len(observed.srs) == 1


def _draft_processes(worker: int) -> list[int]:
    """The worker's spawned draft processes (``model.draft_processes``)."""
    found = []
    for pid in descendants(worker):
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:  # gone meanwhile
            continue
    return found


@_FULL_ONLY
def test_draft_processes_killed_again_and_again_lose_no_study_and_leave_the_worker_up(
    tmp_path: Path, tiny_model_dir: Path, postgres_url: str, redis_namespace: RedisNamespace
) -> None:
    """kill -9 every draft process the GPU worker starts, four times, while six studies go through in batches of
    two: each study ends dispatched with one SR, the worker itself is never restarted."""
    studies = [make_study(StudySpec(seed=150 + i)) for i in range(6)]
    port = free_port()
    with mllp_receiver() as ris, running_orthanc(tmp_path / "orthanc") as pacs:
        env = _env(tmp_path, tiny_model_dir, postgres_url, redis_namespace.url, redis_namespace.prefix, port, pacs,
                   ris.port, RADTRACE_MODEL__BATCH_SIZE="2", RADTRACE_MODEL__DRAFT_PROCESSES="1",
                   RADTRACE_BROKER__MAX_ATTEMPTS="10")  # fmt: skip
        with running_service(env, tmp_path / "serve.log") as service:
            worker = service.child("worker")
            killed: list[int] = []
            stop = threading.Event()

            def kill_draft_processes() -> None:
                while len(killed) < 4 and not stop.wait(0.1):
                    for pid in _draft_processes(worker):
                        if pid not in killed:
                            os.kill(pid, signal.SIGKILL)
                            killed.append(pid)

            killer = threading.Thread(target=kill_draft_processes, daemon=True)
            killer.start()
            try:
                _send([path for i, study in enumerate(studies) for path in write_study(study, tmp_path / f"s{i}")],
                      port)  # fmt: skip
                for study in studies:
                    [revision] = service.wait_settled(str(study[0].StudyInstanceUID), timeout=180)
                    assert revision.state is RevisionState.DISPATCHED, revision.reason
            finally:
                stop.set()
                killer.join()
            assert killed, "no draft process was ever seen under the worker"
            # the first pool dies while it starts, with the first batch's drafts in it: those studies were retried
            assert max(revision.attempts for revision in service.revisions()) >= 2
            assert service.child("worker") == worker  # a draft process's death never took the worker down
            accepted = sorted(uid for study in studies for uid in _uids(study))
            observed = check_invariants(service.store_url, pacs, service.env, accepted=accepted, ris=ris)
            assert len(observed.srs) == 6


def _store(assoc: Association, ds: Dataset) -> bool:
    """C-STORE one instance on an open association; whether it was answered success."""
    try:
        status = assoc.send_c_store(ds)
    except RuntimeError:  # the association is gone
        return False
    return bool(status) and status.Status == 0x0000


def test_listener_killed_mid_study_loses_nothing_it_accepted(
    tmp_path: Path, tiny_model_dir: Path, postgres_url: str, redis_namespace: RedisNamespace
) -> None:
    spec = StudySpec(seed=102)
    study = make_study(spec, [ImageSpec(view=view) for view in ("PA", "LL", "AP", "PA")])
    study_uid = spec.study_instance_uid
    files = write_study(study, tmp_path / "study")
    port = free_port()
    with mllp_receiver() as ris, running_orthanc(tmp_path / "orthanc") as pacs:
        env = _env(tmp_path, tiny_model_dir, postgres_url, redis_namespace.url, redis_namespace.prefix, port, pacs,
                   ris.port)  # fmt: skip
        with running_service(env, tmp_path / "serve.log") as service:
            # The PACS sends the study on one association; the listener dies after two instances, mid-association.
            sender = AE(ae_title="PACS")
            sender.add_requested_context(str(study[0].SOPClassUID), ExplicitVRLittleEndian)
            assoc = sender.associate("127.0.0.1", port, ae_title="RADTRACE")
            assert assoc.is_established
            try:
                assert _store(assoc, study[0])
                assert _store(assoc, study[1])
                listener = service.kill("listener")
                wait_until(lambda: not alive(listener), 10, "the listener dead", service.log_file)
                assert not any(_store(assoc, ds) for ds in study[2:])
            finally:
                assoc.abort()
                close_socket(assoc)  # pynetdicom leaves a socket the listener's death reset open, for the GC
                sender.shutdown()
            accepted = _uids(study[:2])
            assert [sop for r in service.revisions(study_uid) for sop in r.instances] == accepted

            # serve restarts the listener; the PACS sends the whole study again, as it does after a failed send
            wait_until(lambda: echoscu(port, timeout=5).returncode == 0, 60, "the listener back", service.log_file)
            _send(files, port)

            def all_final(seen: list[RevisionSeen]) -> bool:
                mine = [r for r in seen if r.study_uid == study_uid]
                every = sum(len(r.instances) for r in mine) == len(study)
                return bool(mine) and every and all(r.state.is_final for r in mine)

            service.wait_for("every instance in a final revision", all_final, 90)
            observed = check_invariants(service.store_url, pacs, service.env, accepted=_uids(study), ris=ris)
            mine = observed.of(study_uid)
            assert all(r.state is RevisionState.DISPATCHED for r in mine), mine
            assert set(accepted) <= set(mine[0].instances)  # accepted before the kill, kept in revision 1
            assert _audit_types(service).count("instance_duplicate") == len(accepted)


def test_redis_restarted_empty_mid_flight_loses_no_study(
    tmp_path: Path, tiny_model_dir: Path, postgres_url: str
) -> None:
    first, second = make_study(StudySpec(seed=103)), make_study(StudySpec(seed=104, accession="RTACC000104"))
    port = free_port()
    with (
        private_redis(tmp_path / "redis") as broker,
        mllp_receiver() as ris,
        running_orthanc(tmp_path / "orthanc") as pacs,
    ):
        env = _env(tmp_path, tiny_model_dir, postgres_url, broker.url, "", port, pacs, ris.port)
        with running_service(env, tmp_path / "serve.log") as service:
            _send(write_study(first, tmp_path / "first"), port)
            service.wait_for("the first study queued",
                             lambda seen: any(r.state is not RevisionState.RECEIVING for r in seen), 60)  # fmt: skip
            broker.stop()  # no persistence: every queued and unacknowledged message is gone
            _send(write_study(second, tmp_path / "second"), port)  # its doorbell cannot ring
            service.wait_for("the second study queued",
                             lambda seen: len(seen) == 2 and all(r.state is not RevisionState.RECEIVING
                                                                 for r in seen), 30)  # fmt: skip
            time.sleep(2)
            broker.start()
            for study in (first, second):
                [revision] = service.wait_settled(str(study[0].StudyInstanceUID), timeout=90)
                assert revision.state is RevisionState.DISPATCHED, revision.reason
            check_invariants(service.store_url, pacs, service.env, accepted=_uids(first + second), ris=ris)


@_FULL_ONLY
def test_redis_flushed_mid_flight_loses_no_study(tmp_path: Path, tiny_model_dir: Path, postgres_url: str) -> None:
    studies = [make_study(StudySpec(seed=seed, accession=f"RTACC{seed:06d}")) for seed in (105, 106, 107)]
    port = free_port()
    with (
        private_redis(tmp_path / "redis") as broker,
        mllp_receiver() as ris,
        running_orthanc(tmp_path / "orthanc") as pacs,
    ):
        env = _env(tmp_path, tiny_model_dir, postgres_url, broker.url, "", port, pacs, ris.port)
        with running_service(env, tmp_path / "serve.log") as service:
            for n, study in enumerate(studies):
                _send(write_study(study, tmp_path / f"study{n}"), port)
            service.wait_for("the studies queued",
                             lambda seen: len(seen) == 3 and all(r.state is not RevisionState.RECEIVING
                                                                 for r in seen), 60)  # fmt: skip
            broker.flush()  # the doorbells of the studies still waiting are gone
            for study in studies:
                [revision] = service.wait_settled(str(study[0].StudyInstanceUID), timeout=90)
                assert revision.state is RevisionState.DISPATCHED, revision.reason
            check_invariants(
                service.store_url, pacs, service.env, accepted=_uids([ds for study in studies for ds in study]), ris=ris
            )


def test_postgresql_restarted_mid_flight(tmp_path: Path, tiny_model_dir: Path, redis_namespace: RedisNamespace) -> None:
    first, second = make_study(StudySpec(seed=108)), make_study(StudySpec(seed=109, accession="RTACC000109"))
    second_uid = str(second[0].StudyInstanceUID)
    second_files = write_study(second, tmp_path / "second")
    port = free_port()
    with private_postgres() as database, mllp_receiver() as ris, running_orthanc(tmp_path / "orthanc") as pacs:
        url = database.create_database()
        # The worker that lost the database mid-processing could not release its claim; it must take its own claim
        # back at once, not after the claim lapses (600 s here: far beyond this test's waits).
        env = _env(tmp_path, tiny_model_dir, url, redis_namespace.url, redis_namespace.prefix, port, pacs, ris.port,
                   RADTRACE_BROKER__CLAIM_TIMEOUT_S="600")  # fmt: skip
        with running_service(env, tmp_path / "serve.log") as service:
            _send(write_study(first, tmp_path / "first"), port)
            service.wait_for("the first study processing",
                             lambda seen: any(r.state is RevisionState.PROCESSING for r in seen), 60)  # fmt: skip
            database.stop()
            refused = storescu(second_files, port)  # nothing is safe without the database: no success
            assert refused.returncode != 0, refused.stdout + refused.stderr
            time.sleep(2)
            database.start()
            assert service.revisions(second_uid) == []  # none of it was accepted
            _send(second_files, port)  # the PACS sends again what failed
            for study in (first, second):
                [revision] = service.wait_settled(str(study[0].StudyInstanceUID), timeout=90)
                assert revision.state is RevisionState.DISPATCHED, revision.reason
            check_invariants(service.store_url, pacs, service.env, accepted=_uids(first + second), ris=ris)


@_FULL_ONLY
def test_pacs_down_for_a_while_gets_its_sr_once_it_is_back(
    tmp_path: Path, tiny_model_dir: Path, postgres_url: str, redis_namespace: RedisNamespace
) -> None:
    study = make_study(StudySpec(seed=110))
    study_uid = str(study[0].StudyInstanceUID)
    port = free_port()
    with running_orthanc(tmp_path / "orthanc") as pacs:
        pass  # its ports and storage, for the restart; down from here on
    with mllp_receiver() as ris:
        env = _env(tmp_path, tiny_model_dir, postgres_url, redis_namespace.url, redis_namespace.prefix, port, pacs,
                   ris.port)  # fmt: skip
        with running_service(env, tmp_path / "serve.log") as service:
            _send(write_study(study, tmp_path / "study"), port)
            wait_until(lambda: any(kind == "sr" and attempts >= 3 for kind, _, attempts in _outbox(service)), 60,
                       "SR deliveries failing", service.log_file)  # fmt: skip
            [revision] = service.revisions(study_uid)
            assert revision.state is RevisionState.REPORTED  # not dispatched while the PACS is down
            assert ris.received  # the RIS got its message meanwhile
            with running_orthanc(tmp_path / "orthanc", dicom_port=pacs.dicom_port, http_port=pacs.http_port) as back:
                [revision] = service.wait_settled(study_uid, timeout=60)
                assert revision.state is RevisionState.DISPATCHED, revision.reason
                check_invariants(service.store_url, back, service.env, accepted=_uids(study), ris=ris)
            types = _audit_types(service)
            assert "dispatch_retry_scheduled" in types, types


@_FULL_ONLY
def test_ris_down_for_a_while_gets_its_hl7_once_it_is_back(
    tmp_path: Path, tiny_model_dir: Path, postgres_url: str, redis_namespace: RedisNamespace
) -> None:
    study = make_study(StudySpec(seed=111))
    study_uid = str(study[0].StudyInstanceUID)
    port, ris_port = free_port(), free_port()
    with running_orthanc(tmp_path / "orthanc") as pacs:
        env = _env(tmp_path, tiny_model_dir, postgres_url, redis_namespace.url, redis_namespace.prefix, port, pacs,
                   ris_port)  # fmt: skip
        with running_service(env, tmp_path / "serve.log") as service:
            _send(write_study(study, tmp_path / "study"), port)
            wait_until(lambda: any(kind == "hl7" and attempts >= 3 for kind, _, attempts in _outbox(service)), 60,
                       "HL7 deliveries failing", service.log_file)  # fmt: skip
            [revision] = service.revisions(study_uid)
            assert revision.state is RevisionState.REPORTED
            assert len(pacs.srs(study_uid)) == 1  # the PACS got its SR meanwhile
            with mllp_receiver(port=ris_port) as ris:
                [revision] = service.wait_settled(study_uid, timeout=60)
                assert revision.state is RevisionState.DISPATCHED, revision.reason
                check_invariants(service.store_url, pacs, service.env, accepted=_uids(study), ris=ris)
                assert len(set(ris.control_ids)) == 1  # retries resend the same message, never a new one


@_FULL_ONLY
def test_the_same_study_sent_twice_gets_one_sr(
    tmp_path: Path, tiny_model_dir: Path, postgres_url: str, redis_namespace: RedisNamespace
) -> None:
    study = make_study(StudySpec(seed=112))
    study_uid = str(study[0].StudyInstanceUID)
    files = write_study(study, tmp_path / "study")
    port = free_port()
    with mllp_receiver() as ris, running_orthanc(tmp_path / "orthanc") as pacs:
        env = _env(tmp_path, tiny_model_dir, postgres_url, redis_namespace.url, redis_namespace.prefix, port, pacs,
                   ris.port)  # fmt: skip
        with running_service(env, tmp_path / "serve.log") as service:
            _send(files, port)
            _send(files, port)  # at once, while the study is still receiving
            [revision] = service.wait_settled(study_uid)
            assert revision.state is RevisionState.DISPATCHED, revision.reason
            _send(files, port)  # and again after its SR went out
            time.sleep(4)  # past settle_seconds and several reconciler passes
            observed = check_invariants(service.store_url, pacs, service.env, accepted=_uids(study), ris=ris)
            assert [r.number for r in observed.of(study_uid)] == [1]
            assert len(ris.received) == 1
            assert _audit_types(service).count("instance_duplicate") == 2 * len(study)


@_FULL_ONLY
def test_images_arriving_after_the_sr_open_a_new_revision_whose_sr_replaces_it(
    tmp_path: Path, tiny_model_dir: Path, postgres_url: str, redis_namespace: RedisNamespace
) -> None:
    spec = StudySpec(seed=113)
    first = [make_image(spec, ImageSpec(view="PA"), 1, 1)]
    late = [make_image(spec, ImageSpec(view="LL"), 2, 1)]
    study_uid = spec.study_instance_uid
    port = free_port()
    with mllp_receiver() as ris, running_orthanc(tmp_path / "orthanc") as pacs:
        env = _env(tmp_path, tiny_model_dir, postgres_url, redis_namespace.url, redis_namespace.prefix, port, pacs,
                   ris.port)  # fmt: skip
        with running_service(env, tmp_path / "serve.log") as service:
            _send(write_study(first, tmp_path / "first"), port)
            [one] = service.wait_settled(study_uid)
            assert one.state is RevisionState.DISPATCHED, one.reason
            _send(write_study(late, tmp_path / "late"), port)
            one, two = service.wait_settled(study_uid, count=2)
            assert two.state is RevisionState.DISPATCHED, two.reason
            assert two.instances == tuple(_uids(late))
            observed = check_invariants(service.store_url, pacs, service.env, accepted=_uids(first + late), ris=ris)
            assert set(observed.srs) == {one.sr_sop_instance_uid, two.sr_sop_instance_uid}
            replacing = observed.srs[str(two.sr_sop_instance_uid)]
            predecessors = [
                str(item.ReferencedSOPInstanceUID)
                for study_ref in replacing.PredecessorDocumentsSequence
                for series in study_ref.ReferencedSeriesSequence
                for item in series.ReferencedSOPSequence
            ]
            assert predecessors == [one.sr_sop_instance_uid]
            assert "PredecessorDocumentsSequence" not in observed.srs[str(one.sr_sop_instance_uid)]
            # the second draft read the study up to now, not only the late lateral (alone, no frontal image to read)
            evidence = {
                str(item.ReferencedSOPInstanceUID)
                for ref in replacing.CurrentRequestedProcedureEvidenceSequence
                for series in ref.ReferencedSeriesSequence
                for item in series.ReferencedSOPSequence
            }
            assert _uids(first) == sorted(evidence)
            assert len(ris.received) == 2
            hl7_texts = [json.dumps(str(message)) for message in ris.received]
            assert str(two.sr_sop_instance_uid) in hl7_texts[1]


def test_serve_killed_and_restarted_mid_study_leaves_no_orphans_and_finishes_the_study(
    tmp_path: Path, tiny_model_dir: Path, postgres_url: str, redis_namespace: RedisNamespace
) -> None:
    study = make_study(StudySpec(seed=114))
    study_uid = str(study[0].StudyInstanceUID)
    port = free_port()
    with mllp_receiver() as ris, running_orthanc(tmp_path / "orthanc") as pacs:
        env = _env(tmp_path, tiny_model_dir, postgres_url, redis_namespace.url, redis_namespace.prefix, port, pacs,
                   ris.port, RADTRACE_LISTENER__SETTLE_SECONDS="4")  # fmt: skip
        with running_service(env, tmp_path / "serve.log") as service:
            _send(write_study(study, tmp_path / "study"), port)
            children = service.serve.note_children()
            os.kill(service.serve.process.pid, signal.SIGKILL)  # the supervisor itself, mid-study
            service.serve.process.wait(10)
            wait_until(lambda: not any(alive(pid) for pid in children), 30, "serve's children gone", service.log_file)
            [revision] = service.revisions(study_uid)
            assert revision.state in {RevisionState.RECEIVING, RevisionState.QUEUED}  # serve died before inference
        with running_service(env, tmp_path / "serve-again.log") as again:
            [revision] = again.wait_settled(study_uid)
            assert revision.state is RevisionState.DISPATCHED, revision.reason
            check_invariants(again.store_url, pacs, again.env, accepted=_uids(study), ris=ris)
