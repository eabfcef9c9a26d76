"""Signed checkpoints as the anchor an attacker with database rights cannot recompute.

Whoever can write the database can rewrite rows and recompute every hash: the chain alone then verifies. Every
checkpoint in audit.checkpoint_dir is checked by a plain `radtrace audit verify` (and by the API and console), so
a rewrite of rows a checkpoint vouched for, or rows removed back below it, is caught; what no checkpoint covers
yet is said, not claimed intact; and `audit checkpoint` refuses to sign a chain that does not verify.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from audit_support import as_superuser, rehash_from
from radtrace.audit.api import create_api
from radtrace.audit.checkpoints import CheckpointSource
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.operations import checkpoint_audit_log, verify_audit_log
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.audit.tokens import create_token
from radtrace.errors import PermanentError
from radtrace.store.engine import Store
from tests_support import radtrace

pytestmark = pytest.mark.integration

KEY = "a-checkpoint-key-the-database-never-sees"
OPERATOR = Actor(user="root", host="radtrace-host")


def _fill(store: Store, rows: int = 8) -> None:
    AuditRecorder(store).record_many(
        [AuditEvent(EventType.INSTANCE_RECEIVED, Actor(ae_title="PACS1"), study_uid=f"1.2.3.{n}") for n in range(rows)]
    )


def _env(store: Store, tmp_path: Path) -> dict[str, str]:
    return {
        "RADTRACE_DATA_DIR": str(tmp_path / "var"),
        "RADTRACE_STORE__URL": store.engine.url.render_as_string(hide_password=False),
        "RADTRACE_AUDIT__CHECKPOINT_KEY": KEY,
        "RADTRACE_AUDIT__CHECKPOINT_DIR": str(tmp_path / "checkpoints"),
    }


def _events(store: Store, kind: str) -> list[sa.RowMapping]:
    table = AuditEventRow.__table__
    with store.engine.connect() as connection:
        return list(connection.execute(sa.select(table).where(table.c.event_type == kind)).mappings())


def test_a_rewrite_with_recomputed_hashes_before_the_latest_checkpoint_fails_a_plain_verify(
    store: Store, tmp_path: Path
) -> None:
    _fill(store)
    env = _env(store, tmp_path)
    taken = radtrace("audit", "checkpoint", env=env)
    assert taken.returncode == 0, taken.stderr
    assert len(list((tmp_path / "checkpoints").glob("audit-checkpoint-*.json"))) == 1
    rehash_from(store, 4, "UPDATE audit_events SET study_uid = '9.9.9' WHERE seq = 4")
    verified = radtrace("audit", "verify", env=env)  # no --checkpoint: the folder's are checked
    assert verified.returncode == 1, verified.stdout
    assert "row 8 has hash" in verified.stderr
    assert "rewritten after the checkpoint" in verified.stderr
    assert _events(store, "tamper_detected")


def test_rows_removed_back_below_a_checkpoint_fail_verify(store: Store, tmp_path: Path) -> None:
    _fill(store)
    source = CheckpointSource(KEY.encode(), tmp_path / "checkpoints")
    checkpoint_audit_log(store, OPERATOR, KEY.encode(), tmp_path / "checkpoints" / "audit-checkpoint-1.json")
    as_superuser(store, "DELETE FROM audit_events WHERE seq > 5")
    verified = verify_audit_log(store, OPERATOR, checkpoints=source)
    assert verified.result.first_break is None  # the shorter chain is valid in itself
    assert not verified.ok
    assert "row 8 named by the signed checkpoint" in verified.problems[0]
    assert "removed from the end" in verified.problems[0]


def test_verify_says_which_rows_a_checkpoint_anchors_and_which_it_does_not(store: Store, tmp_path: Path) -> None:
    _fill(store)
    env = _env(store, tmp_path)
    plain = radtrace("audit", "verify", env=env)
    assert plain.returncode == 0, plain.stderr
    assert "no signed checkpoint was found" in plain.stdout
    assert "rows 1 to 8 are chained to each other" in plain.stdout
    assert radtrace("audit", "checkpoint", env=env).returncode == 0  # signs seq 9 (the verification above)
    _fill(store, 2)  # 10 checkpointed, 11 and 12
    verified = radtrace("audit", "verify", env=env)
    assert verified.returncode == 0, verified.stderr
    text = " ".join(verified.stdout.split())
    assert "rows 1 to 9 match a signed checkpoint (1 checked)" in text
    assert "rows 10 to 12 are not anchored" in text
    assert "rewrite these rows with recomputed hashes" in text


def test_a_forged_or_damaged_checkpoint_in_the_folder_fails_verify(store: Store, tmp_path: Path) -> None:
    _fill(store)
    folder = tmp_path / "checkpoints"
    written = checkpoint_audit_log(store, OPERATOR, KEY.encode(), folder / "audit-checkpoint-1.json")
    forged = json.loads((folder / "audit-checkpoint-1.json").read_text(encoding="utf-8")) | {"seq": written.seq - 1}
    (folder / "audit-checkpoint-2.json").write_text(json.dumps(forged), encoding="utf-8")
    (folder / "audit-checkpoint-3.json").write_text("{", encoding="utf-8")
    verified = verify_audit_log(store, OPERATOR, checkpoints=CheckpointSource(KEY.encode(), folder))
    assert not verified.ok
    assert any("audit-checkpoint-2.json has an invalid signature" in problem for problem in verified.problems)
    assert any("audit-checkpoint-3.json is unreadable" in problem for problem in verified.problems)
    assert verified.result.anchored_seq == written.seq  # the genuine one still holds


def test_checkpoint_refuses_to_sign_a_chain_that_does_not_verify(store: Store, tmp_path: Path) -> None:
    _fill(store)
    env = _env(store, tmp_path)
    as_superuser(store, "UPDATE audit_events SET study_uid = '9.9.9' WHERE seq = 3")
    refused = radtrace("audit", "checkpoint", env=env)
    assert refused.returncode == 1
    assert "no checkpoint written, the chain does not verify" in refused.stderr
    assert "broken at seq 3" in refused.stderr
    assert not list((tmp_path / "checkpoints").glob("*.json"))
    assert _events(store, "tamper_detected")
    assert not _events(store, "audit_checkpointed")
    with pytest.raises(PermanentError, match="does not verify"):
        checkpoint_audit_log(store, OPERATOR, KEY.encode(), tmp_path / "checkpoints" / "audit-checkpoint-x.json")


def test_the_api_verifies_against_the_checkpoints_it_is_given(store: Store, tmp_path: Path) -> None:
    _fill(store)
    folder = tmp_path / "checkpoints"
    checkpoint_audit_log(store, OPERATOR, KEY.encode(), folder / "audit-checkpoint-1.json")
    admin = create_token(store, "audit.lead", "admin", OPERATOR)
    headers = {"Authorization": f"Bearer {admin.secret}"}
    with TestClient(create_api(store, checkpoints=CheckpointSource(KEY.encode(), folder))) as client:
        report = client.get("/v1/verify", headers=headers).json()
        assert report["ok"] is True
        assert report["anchored_seq"] == 8
        assert "rows 1 to 8 match a signed checkpoint" in report["covered"]
        assert "not anchored" in report["not_checked"]
        rehash_from(store, 2, "UPDATE audit_events SET study_uid = '9.9.9' WHERE seq = 2")
        report = client.get("/v1/verify", headers=headers).json()
    assert report["ok"] is False
    assert report["first_break_seq"] is None
    assert "rewritten after the checkpoint" in report["problems"][0]
