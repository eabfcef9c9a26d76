"""`radtrace audit query/timeline/token` and `radtrace api` as an operator runs them (real processes, SQLite)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import secrets
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from audit_support import DEEPMEDIX, STUDY_A, seed_audit_log
from radtrace.audit.credentials import token_binding
from radtrace.audit.tokens import AuthenticationError, Role, authenticate, list_tokens
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from tests_support import radtrace, running_api

pytestmark = pytest.mark.integration


@pytest.fixture
def seeded_env(tmp_path: Path) -> tuple[Store, dict[str, str]]:
    url = f"sqlite:///{tmp_path / 'radtrace.db'}"
    store = Store.from_url(url)
    upgrade(store)
    return store, {"RADTRACE_DATA_DIR": str(tmp_path / "var"), "RADTRACE_STORE__URL": url}


def test_query_in_each_format_a_timeline_and_a_bad_filter(seeded_env: tuple[Store, dict[str, str]]) -> None:
    store, env = seeded_env
    study_a = [s.seq for s in seed_audit_log(store) if s.event.study_uid == STUDY_A]

    as_json = radtrace("audit", "query", "--study-uid", STUDY_A, "--limit", "3", "--format", "json", env=env)
    assert as_json.returncode == 0, as_json.stderr
    page = json.loads(as_json.stdout)
    assert [event["seq"] for event in page["events"]] == study_a[:3]
    assert page["next_after_seq"] == study_a[2]

    as_csv = radtrace("audit", "query", "--label", "Pleural Effusion", "--format", "csv", env=env)
    assert as_csv.returncode == 0, as_csv.stderr
    (row,) = csv.DictReader(io.StringIO(as_csv.stdout))
    assert (row["study_uid"], row["event_type"], row["labels"]) == (
        STUDY_A, "inference_completed", "Cardiomegaly,Pleural Effusion",
    )  # fmt: skip

    as_table = radtrace("audit", "query", "--model-name", DEEPMEDIX, "--since", "2025-03-03T08:05:00Z", env=env)
    assert as_table.returncode == 0, as_table.stderr
    assert "ACC-1002" in as_table.stdout
    assert "inference_completed" in as_table.stdout
    assert "ACC-1001" not in as_table.stdout

    timeline = radtrace("audit", "timeline", STUDY_A, "--format", "json", env=env)
    assert timeline.returncode == 0, timeline.stderr
    assert {stage["name"]: stage["seconds"] for stage in json.loads(timeline.stdout)["stages"]}["total"] == 62.5
    as_query = radtrace("audit", "query", "--study-uid", STUDY_A, "--timeline", "--format", "json", env=env)
    assert as_query.returncode == 0, as_query.stderr
    assert json.loads(as_query.stdout) == json.loads(timeline.stdout)
    mixed = radtrace("audit", "query", "--study-uid", STUDY_A, "--timeline", "--label", "Edema", env=env)
    assert mixed.returncode == 2
    assert "--timeline takes --study-uid" in mixed.stderr

    bad = radtrace("audit", "query", "--event-type", "inference_done", "--since", "yesterday", env=env)
    assert bad.returncode == 2
    assert "inference_completed" in bad.stderr  # the valid event types are listed
    assert "since" in bad.stderr
    assert "Traceback" not in bad.stderr

    with store.engine.connect() as connection:
        asked = connection.execute(
            sa.text("SELECT actor_user, payload FROM audit_events WHERE event_type = 'audit_queried' ORDER BY seq")
        )
        views = [(user, json.loads(payload)["view"]) for user, payload in asked]
    assert [view for _, view in views] == ["events", "events", "events", "timeline", "timeline"]  # not the bad ones
    assert all(user for user, _ in views)

    # --actor: what one user did (here the operator who ran the queries above)
    mine = radtrace(
        "audit", "query", "--actor", views[0][0], "--event-type", "audit_queried", "--format", "json", env=env
    )
    assert mine.returncode == 0, mine.stderr
    assert [event["seq"] for event in json.loads(mine.stdout)["events"]] == asked_seqs(store)[:5]
    nobody = radtrace("audit", "query", "--actor", "nobody-here", "--format", "json", env=env)
    assert nobody.returncode == 0, nobody.stderr
    assert json.loads(nobody.stdout)["events"] == []
    store.dispose()


def test_query_newest_first_pages_back_with_before_seq(seeded_env: tuple[Store, dict[str, str]]) -> None:
    """QA staff looking into last night start from the newest events (the console's explorer does since aef9031);
    before, the CLI had only --after-seq, oldest first."""
    store, env = seeded_env
    study_a = [s.seq for s in seed_audit_log(store) if s.event.study_uid == STUDY_A]
    newest = radtrace("audit", "query", "--study-uid", STUDY_A, "--limit", "2", "--newest-first", "--format", "json",
                      env=env)  # fmt: skip
    assert newest.returncode == 0, newest.stderr
    page = json.loads(newest.stdout)
    assert [event["seq"] for event in page["events"]] == study_a[::-1][:2]
    assert (page["next_after_seq"], page["next_before_seq"]) == (None, study_a[-2])
    older = radtrace("audit", "query", "--study-uid", STUDY_A, "--limit", "100", "--newest-first", "--before-seq",
                     str(page["next_before_seq"]), "--format", "json", env=env)  # fmt: skip
    assert older.returncode == 0, older.stderr
    last = json.loads(older.stdout)
    assert [event["seq"] for event in last["events"]] == study_a[::-1][2:]
    assert last["next_before_seq"] is None  # the oldest page
    store.dispose()


def asked_seqs(store: Store) -> list[int]:
    """Seqs of the audit_queried events, oldest first."""
    with store.engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT seq FROM audit_events WHERE event_type = 'audit_queried' ORDER BY seq")
        )
        return [seq for (seq,) in rows]


def test_token_create_list_and_revoke(seeded_env: tuple[Store, dict[str, str]]) -> None:
    store, env = seeded_env
    created = radtrace("audit", "token", "create", "qa.nurse", "--role", "qa", env=env)
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip()
    assert len(secret) >= 43  # 32 random bytes, URL-safe base64
    assert "shown only this once" in created.stderr
    assert authenticate(store, secret).role is Role.QA

    duplicate = radtrace("audit", "token", "create", "qa.nurse", "--role", "admin", env=env)
    assert duplicate.returncode == 2
    assert "already exists" in duplicate.stderr

    listed = radtrace("audit", "token", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "qa.nurse" in listed.stdout
    assert secret not in listed.stdout

    revoked = radtrace("audit", "token", "revoke", "qa.nurse", env=env)
    assert revoked.returncode == 0, revoked.stderr
    with pytest.raises(AuthenticationError, match="revoked"):
        authenticate(store, secret)
    assert radtrace("audit", "token", "revoke", "nobody", env=env).returncode == 2

    with store.engine.connect() as connection:
        kinds = connection.execute(sa.text("SELECT event_type, dicom_event_id, payload FROM audit_events ORDER BY seq"))
        # The binding ties the event to the row's name, role and secret hash (radtrace.audit.credentials).
        binding = token_binding("qa.nurse", "qa", hashlib.sha256(secret.encode()).hexdigest())
        assert [(kind, code, json.loads(payload)) for kind, code, payload in kinds] == [
            ("api_token_created", "110113", {"token_name": "qa.nurse", "role": "qa", "binding": binding}),
            ("api_token_revoked", "110113", {"token_name": "qa.nurse", "role": "qa", "binding": binding}),
        ]
    store.dispose()


def test_api_command_serves_with_the_bootstrap_admin_token(
    seeded_env: tuple[Store, dict[str, str]], tmp_path: Path
) -> None:
    store, env = seeded_env
    seeded = seed_audit_log(store)
    secret = secrets.token_urlsafe(32)
    env = env | {"RADTRACE_AUDIT__CHECKPOINT_KEY": "kept-off-the-database"}
    assert radtrace("audit", "checkpoint", env=env).returncode == 0  # into <data_dir>/checkpoints, the default
    bearer = {"Authorization": f"Bearer {secret}"}
    with running_api(env | {"RADTRACE_API__BOOTSTRAP_ADMIN_TOKEN": secret}, tmp_path / "api.log", 30) as api:
        verified = httpx.get(f"{api.base_url}/v1/verify", headers=bearer, timeout=10).json()
        # radtrace api checks the service's own checkpoints (it was built without them: 'no signed checkpoint')
        assert (verified["ok"], verified["checkpoints_checked"], verified["anchored_seq"]) == (True, 1, seeded[-1].seq)
        events = httpx.get(f"{api.base_url}/v1/events", params={"patient_id": "PAT-0001"}, headers=bearer, timeout=10)
        assert len(events.json()["events"]) == 3
    log = api.log()
    assert "GET /v1/events -> 200" in log
    assert "PAT-0001" not in log
    assert secret not in log
    assert [(token.name, token.role) for token in list_tokens(store)] == [("bootstrap-admin", Role.ADMIN)]


def test_a_query_when_the_database_is_down_is_a_clear_error(tmp_path: Path) -> None:
    env = {"RADTRACE_DATA_DIR": str(tmp_path), "RADTRACE_STORE__URL": "postgresql://postgres@127.0.0.1:1/radtrace"}
    result = radtrace("audit", "query", "--study-uid", STUDY_A, env=env)
    assert result.returncode == 1
    assert "database unavailable" in result.stderr
    assert "Traceback" not in result.stderr
