"""A PACS re-sends an instance the listener holds, transcoded (another transfer syntax, group lengths, its private
block moved, lossily under the same UID) or corrected: dcmtk's storescu to a real listener, the real films.

Before: the file's hash differed, so every transcoded re-send was a new version and, the study already queued, a new
revision (a second reading, a second draft, an amended SR for an unchanged study). Now the re-send is compared with
the held copy by content: the same content, or a lossy copy of it, is acknowledged (Success) as a duplicate, audited
with why; a corrected patient name still opens the next revision. After every send: the DICOM status, the revisions,
the instance rows, the spool and the audit rows.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.uid import UID, ExplicitVRLittleEndian

from listener_support import audit_payloads, audit_types, listener_env, listener_settings, rows, running, start_listener
from radtrace.dicom_listener.dcmtk import STORESCU_PROPOSE, dcmtk_env
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.store.models import Instance, Revision, RevisionState
from resend_support import LOSSY, held_film, lossless_forms, resent, transfer_syntax

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is not installed"),
]

SETTLE_S = 0.6
#: The NEMA film decodes in about half a second per codec: a sample of its forms, each kind of change once.
NEMA_FORMS = ["implicit", "explicit-group-lengths", "jpeg-ls-lossless", "jpeg-2000-lossless", "private-block-moved"]
QUEUED = RevisionState.QUEUED


def _send(path: Path, port: int) -> str:
    """Send ``path`` with storescu proposing its transfer syntax; the C-STORE response storescu reports."""
    syntax = transfer_syntax(path)
    options = [] if syntax == ExplicitVRLittleEndian else [STORESCU_PROPOSE[syntax]]
    command = ["storescu", "-v", "-aet", "PACS", "-aec", "RADTRACE", *options, "127.0.0.1", str(port), str(path)]
    sent = subprocess.run(command, env=dcmtk_env(), capture_output=True, text=True, timeout=120, check=False)
    response = re.search(r"Received Store Response \(([^)]*)\)", sent.stdout + sent.stderr)
    return response.group(1) if response else f"no response (exit {sent.returncode}): {sent.stderr[-300:]}"


def _wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        time.sleep(0.05)


def _revisions(store: Store) -> list[tuple[int, RevisionState]]:
    return sorted((r.number, r.state) for r in rows(store, Revision))


def _spooled(spool: Path) -> list[str]:
    return sorted(p.name for p in spool.rglob("*.dcm") if ".incoming" not in p.parts)


@pytest.mark.parametrize("film", ["nih", "nema"])
def test_a_transcoded_resend_opens_no_revision_and_a_corrected_one_does(
    tmp_path: Path, store: Store, listener_port: int, film: str
) -> None:
    settings = listener_settings(tmp_path, listener_port, settle_seconds=SETTLE_S)
    held = held_film(film, tmp_path / "films")
    forms = [*(lossless_forms(film) if film == "nih" else NEMA_FORMS), *LOSSY[film == "nema" :]]
    with running(settings, store):
        assert _send(held, listener_port) == "Success"
        _wait_for(lambda: _revisions(store) == [(1, QUEUED)])
        [first] = _spooled(settings.spool_dir)
        for number, form in enumerate(forms, start=1):
            again = resent(held, form, tmp_path / "sent")
            assert _send(again, listener_port) == "Success", form
            time.sleep(SETTLE_S)  # a revision opened by it would be receiving by now, and queued soon after
            assert _revisions(store) == [(1, QUEUED)], form
            assert [(i.version, i.transfer_syntax_uid) for i in rows(store, Instance)] == [
                (1, transfer_syntax(held))
            ], form
            assert _spooled(settings.spool_dir) == [first], form
            events = audit_types(store)
            assert events.count("instance_duplicate") == number, form
            assert events.count("instance_new_version") == 0, form
            payload = json.loads(audit_payloads(store, "instance_duplicate")[-1])
            assert payload["transfer_syntax_uid"] == transfer_syntax(again), form
            assert payload["held_transfer_syntax_uid"] == transfer_syntax(held), form
            assert (payload["version"], payload["revision"]) == (1, 1), form
            if form in LOSSY:
                assert payload["content"] == "lossy copy", payload
                assert payload["content_reason"].startswith("lossy re-encoding of the held instance"), payload
            else:
                assert payload["content"] == "same content", payload
                assert payload["content_reason"] == f"same content, re-sent as {UID(transfer_syntax(again)).name}"

        corrected = resent(held, "patient-name-corrected", tmp_path / "sent")
        assert _send(corrected, listener_port) == "Success"
        _wait_for(lambda: _revisions(store) == [(1, QUEUED), (2, QUEUED)])
    assert sorted(i.version for i in rows(store, Instance)) == [1, 2]
    assert len(_spooled(settings.spool_dir)) == 2
    [changed] = [json.loads(p) for p in audit_payloads(store, "instance_new_version")]
    assert changed["content"] == "changed"
    assert changed["changed_attributes"] == ["(0010,0010)"]
    assert changed["revision"] == 2
    assert changed["version"] == 2
    assert "Corrected" not in json.dumps(changed)
    assert audit_types(store).count("study_queued") == 2


def test_kill_9_while_comparing_then_the_resend_after_restart_is_the_duplicate(
    tmp_path: Path, database_url: str, listener_port: int
) -> None:
    """The comparison runs between two transactions: a listener killed during it has written nothing and answered
    nothing; the PACS sends again, and the restarted listener (nothing in memory) finds the same content."""
    migrated = Store.from_url(database_url)
    upgrade(migrated)
    env = listener_env(tmp_path, listener_port, database_url)
    spool = tmp_path / "radtrace" / "spool"
    held = held_film("nema", tmp_path / "films")
    again = resent(held, "jpeg-2000-lossless", tmp_path / "sent")  # the slowest to decode: about a second
    listener = start_listener(env, listener_port)
    try:
        assert _send(held, listener_port) == "Success"
        _wait_for(lambda: _revisions(migrated) == [(1, QUEUED)])
        sender = subprocess.Popen(
            ["storescu", "-v", "-aet", "PACS", "-aec", "RADTRACE", "-xv", "127.0.0.1", str(listener_port), str(again)],
            env=dcmtk_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 30
        while not list((spool / ".incoming").glob("*.part")):  # received whole and staged: now it is compared
            assert time.monotonic() < deadline, "the re-send was never staged"
            time.sleep(0.002)
        time.sleep(0.1)
        listener.send_signal(signal.SIGKILL)
        listener.communicate(timeout=30)
        output = sender.communicate(timeout=60)[0]
        assert "Received Store Response (Success)" not in output  # killed before its answer
        assert _revisions(migrated) == [(1, QUEUED)]
        assert len(rows(migrated, Instance)) == 1
        assert "instance_duplicate" not in audit_types(migrated)

        listener = start_listener(env, listener_port)
        assert not list((spool / ".incoming").iterdir())  # the staged copy was never acknowledged: removed
        assert _send(again, listener_port) == "Success"
        time.sleep(SETTLE_S * 3)
        assert _revisions(migrated) == [(1, QUEUED)]
        assert [i.version for i in rows(migrated, Instance)] == [1]
        [payload] = [json.loads(p) for p in audit_payloads(migrated, "instance_duplicate")]
        assert payload["content"] == "same content"
        assert payload["transfer_syntax_uid"] == str(UID("1.2.840.10008.1.2.4.90"))
    finally:
        listener.send_signal(signal.SIGTERM)
        listener.communicate(timeout=30)
        migrated.dispose()


def test_a_comparison_that_crashes_takes_a_new_version_and_the_listener_serves_on(
    tmp_path: Path, store: Store, listener_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A codec that crashes ends the comparing child, not the listener: the re-send is a new version, as before the
    comparison existed, and its event says why it was not compared."""
    settings = listener_settings(tmp_path, listener_port, settle_seconds=SETTLE_S)
    held = held_film("nih", tmp_path / "films")
    crashing = tmp_path / "python"
    crashing.write_text("#!/bin/sh\nkill -SEGV $$\n")
    crashing.chmod(0o755)
    with running(settings, store):
        assert _send(held, listener_port) == "Success"
        _wait_for(lambda: _revisions(store) == [(1, QUEUED)])
        with monkeypatch.context() as patch:
            patch.setattr(sys, "executable", str(crashing))
            assert _send(resent(held, "jpeg-ls-lossless", tmp_path / "sent"), listener_port) == "Success"
        _wait_for(lambda: _revisions(store) == [(1, QUEUED), (2, QUEUED)])
        assert _send(resent(held, "rle", tmp_path / "sent"), listener_port) == "Success"  # compared again
    [new_version] = [json.loads(p) for p in audit_payloads(store, "instance_new_version")]
    assert new_version["content"] == "not compared"
    assert new_version["content_reason"] == (
        "content not compared (the comparing process ended with signal 11): taken as a new version"
    )
    [duplicate] = [json.loads(p) for p in audit_payloads(store, "instance_duplicate")]
    assert duplicate["content"] == "same content"
    assert duplicate["held_transfer_syntax_uid"] == "1.2.840.10008.1.2.4.80"  # version 2, the latest
    assert sorted(i.version for i in rows(store, Instance)) == [1, 2]


def test_version_1_re_sent_after_a_corrected_version_2_is_version_1_s_duplicate(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    """An old copy of version 1 (from another archive node, transcoded) re-sent after the corrected version 2: before,
    compared with the latest only, it was kept as version 3 with the old patient name and opened a third revision
    (a draft with the uncorrected name). Now it is acknowledged as version 1's duplicate, the audit naming version 1
    and the versions compared; the corrected version 2 stays the latest."""
    settings = listener_settings(tmp_path, listener_port, settle_seconds=SETTLE_S)
    held = held_film("nih", tmp_path / "films")
    corrected = resent(held, "patient-name-corrected", tmp_path / "sent")
    old_copy = resent(held, "jpeg-ls-lossless", tmp_path / "sent")
    corrected_again = resent(corrected, "jpeg-2000-lossless", tmp_path / "sent")
    with running(settings, store):
        assert _send(held, listener_port) == "Success"
        _wait_for(lambda: _revisions(store) == [(1, QUEUED)])
        assert _send(corrected, listener_port) == "Success"
        _wait_for(lambda: _revisions(store) == [(1, QUEUED), (2, QUEUED)])
        assert _send(old_copy, listener_port) == "Success"
        assert _send(corrected_again, listener_port) == "Success"
        time.sleep(SETTLE_S * 2)  # a revision opened by either would be receiving by now
    assert _revisions(store) == [(1, QUEUED), (2, QUEUED)]
    assert sorted(i.version for i in rows(store, Instance)) == [1, 2]
    assert len(_spooled(settings.spool_dir)) == 2
    assert audit_types(store).count("instance_new_version") == 1
    old, latest = (json.loads(p) for p in audit_payloads(store, "instance_duplicate"))
    assert (old["content"], old["version"], old["revision"]) == ("same content", 1, 1), old
    assert (old["matched_version"], old["compared_versions"]) == (1, [2, 1]), old
    assert old["transfer_syntax_uid"] == transfer_syntax(old_copy)
    assert old["content_reason"].endswith("the content of version 1, not of the latest, version 2: the latest is kept")
    assert (latest["content"], latest["version"], latest["matched_version"], latest["compared_versions"]) == (
        "same content", 2, 2, [2]), latest  # fmt: skip
    assert "Corrected" not in json.dumps([old, latest])
