"""API tokens and console accounts are accepted only as the audit chain records them (SQLite and PostgreSQL).

Someone with database rights inserts a token row or an admin account, raises a role, swaps a hash or undoes a
revocation, with SQL and without any audit event: each is refused with its reason and one tamper_detected event.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from radtrace.audit.api import create_api
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.rebind import rebind_credentials
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.audit.tokens import create_token, ensure_bootstrap_admin, revoke_token
from radtrace.config import ConsoleSettings, load_settings
from radtrace.console.accounts import LoginFailed, SignedIn, create_user, log_in, resume_session, start_session
from radtrace.preflight import run_preflight
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade

pytestmark = pytest.mark.integration

OPERATOR = Actor(user="root", host="radtrace-host")
PASSWORD = "correct horse battery"
SETTINGS = ConsoleSettings()


@pytest.fixture
def client(store: Store) -> Iterator[TestClient]:
    with TestClient(create_api(store)) as client:
        yield client


def _sql(store: Store, statement: str, **values: object) -> None:
    with store.engine.begin() as connection:
        connection.execute(sa.text(statement), values)


def _events(store: Store, kind: str) -> list[dict[str, object]]:
    table = AuditEventRow.__table__
    with store.engine.connect() as connection:
        rows = connection.execute(sa.select(table.c.payload).where(table.c.event_type == kind).order_by(table.c.seq))
        return [json.loads(row[0]) for row in rows]


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_tokens_created_and_revoked_normally_still_work(store: Store, client: TestClient) -> None:
    issued = create_token(store, "qa.nurse", "qa", OPERATOR)
    assert client.get("/v1/events", headers=_bearer(issued.secret)).status_code == 200
    revoke_token(store, "qa.nurse", OPERATOR)
    refused = client.get("/v1/events", headers=_bearer(issued.secret))
    assert (refused.status_code, refused.json()["detail"]) == (401, "authentication failed: revoked token")
    assert _events(store, "tamper_detected") == []


def test_a_token_inserted_in_the_database_is_refused_with_one_tamper_alert(store: Store, client: TestClient) -> None:
    secret = secrets.token_urlsafe(32)
    _sql(store, "INSERT INTO api_tokens (name, role, token_sha256, created_at) VALUES ('intruder', 'admin', :h, :t)",
         h=hashlib.sha256(secret.encode()).hexdigest(), t=utc_now())  # fmt: skip
    for _ in range(3):
        answer = client.get("/v1/verify", headers=_bearer(secret))
        assert answer.status_code == 401
        assert answer.json()["detail"] == (
            "authentication failed: token 'intruder' is not recorded in the audit log: "
            "it was inserted in the database directly"
        )
    alerts = _events(store, "tamper_detected")
    assert len(alerts) == 1  # once, not per request
    assert alerts[0]["credential"] == "api_token"
    assert alerts[0]["token_name"] == "intruder"
    assert len(_events(store, "api_authentication_failed")) == 3


def test_a_raised_role_a_swapped_hash_and_an_undone_revocation_are_refused(store: Store, client: TestClient) -> None:
    raised = create_token(store, "qa.nurse", "qa", OPERATOR)
    _sql(store, "UPDATE api_tokens SET role = 'admin' WHERE name = 'qa.nurse'")
    answer = client.get("/v1/events", headers=_bearer(raised.secret))
    assert answer.status_code == 401
    assert "token 'qa.nurse' is not as the audit log recorded it" in answer.json()["detail"]
    assert "role ('admin') or secret hash was changed in the database directly" in answer.json()["detail"]

    create_token(store, "audit.lead", "admin", OPERATOR)
    mine = secrets.token_urlsafe(32)
    _sql(store, "UPDATE api_tokens SET token_sha256 = :h WHERE name = 'audit.lead'",
         h=hashlib.sha256(mine.encode()).hexdigest())  # fmt: skip
    answer = client.get("/v1/events", headers=_bearer(mine))
    assert answer.status_code == 401
    assert "token 'audit.lead' is not as the audit log recorded it" in answer.json()["detail"]

    back = create_token(store, "old.client", "qa", OPERATOR)
    revoke_token(store, "old.client", OPERATOR)
    _sql(store, "UPDATE api_tokens SET revoked_at = NULL WHERE name = 'old.client'")
    answer = client.get("/v1/events", headers=_bearer(back.secret))
    assert answer.status_code == 401
    assert "its revocation was undone in the database" in answer.json()["detail"]

    problems = [alert["problem"] for alert in _events(store, "tamper_detected")]
    assert len(problems) == 2
    assert all("changed in the database directly" in problem for problem in problems)


def test_an_inserted_admin_account_and_a_raised_role_cannot_sign_in(store: Store) -> None:
    _sql(store, "INSERT INTO console_users (name, role, password_hash, created_at, failed_logins) "
         "VALUES ('intruder', 'admin', :h, :t, 0)", h=PasswordHasher().hash(PASSWORD), t=utc_now())  # fmt: skip
    refused = log_in(store, "intruder", PASSWORD, SETTINGS, host="10.0.0.9")
    assert isinstance(refused, LoginFailed)
    assert (
        refused.reason
        == "console account 'intruder' is not recorded in the audit log: it was inserted in the database directly"
    )
    assert isinstance(start_session(store, "intruder", host="10.0.0.9", method="header"), LoginFailed)

    create_user(store, "dr.who", "radiologist", PASSWORD, OPERATOR)
    signed_in = log_in(store, "dr.who", PASSWORD, SETTINGS, host="10.0.0.9")
    assert isinstance(signed_in, SignedIn)
    assert signed_in.cookie is not None
    assert resume_session(store, signed_in.cookie, SETTINGS) is not None
    _sql(store, "UPDATE console_users SET role = 'admin' WHERE name = 'dr.who'")
    assert resume_session(store, signed_in.cookie, SETTINGS) is None  # the live session ends
    again = log_in(store, "dr.who", PASSWORD, SETTINGS, host="10.0.0.9")
    assert isinstance(again, LoginFailed)
    assert "role ('admin') or password hash was changed" in again.reason

    alerts = _events(store, "tamper_detected")
    assert [(alert["credential"], alert["user"]) for alert in alerts] == [
        ("console_user", "intruder"),
        ("console_user", "dr.who"),
    ]
    failed = _events(store, "console_login_failed")
    assert any("inserted in the database directly" in str(event["reason"]) for event in failed)


def test_tokens_and_accounts_from_before_bindings_are_recorded_by_rebind_and_forged_ones_refused(
    store: Store, client: TestClient
) -> None:
    # As an earlier radtrace wrote them: the creation events name the token or account and its role only.
    old_secret, bootstrap = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    for name, secret in (("old.qa", old_secret), ("bootstrap-admin", bootstrap)):
        _sql(store, "INSERT INTO api_tokens (name, role, token_sha256, created_at) VALUES (:n, :r, :h, :t)",
             n=name, r="qa" if name == "old.qa" else "admin", h=hashlib.sha256(secret.encode()).hexdigest(),
             t=utc_now())  # fmt: skip
    _sql(store, "INSERT INTO console_users (name, role, password_hash, created_at, failed_logins) "
         "VALUES ('dr.old', 'radiologist', :h, :t, 0)", h=PasswordHasher().hash(PASSWORD), t=utc_now())  # fmt: skip
    AuditRecorder(store).record_many([
        AuditEvent(EventType.API_TOKEN_CREATED, OPERATOR, payload={"token_name": "old.qa", "role": "qa"}),
        AuditEvent(EventType.API_TOKEN_CREATED, OPERATOR, payload={"token_name": "bootstrap-admin", "role": "admin"}),
        AuditEvent(EventType.CONSOLE_USER_CREATED, OPERATOR,
                   payload={"user": "dr.old", "role": "radiologist", "password": True}),
    ])  # fmt: skip
    # And rows with no event at all, or a role the event does not say.
    forged = secrets.token_urlsafe(32)
    _sql(store, "INSERT INTO api_tokens (name, role, token_sha256, created_at) VALUES ('forged', 'admin', :h, :t)",
         h=hashlib.sha256(forged.encode()).hexdigest(), t=utc_now())  # fmt: skip
    _sql(store, "UPDATE api_tokens SET role = 'admin' WHERE name = 'old.qa'")

    answer = client.get("/v1/events", headers=_bearer(old_secret))
    assert answer.status_code == 401
    assert "role 'admin' in the database but the audit log recorded 'qa'" in (answer.json()["detail"])
    _sql(store, "UPDATE api_tokens SET role = 'qa' WHERE name = 'old.qa'")
    answer = client.get("/v1/events", headers=_bearer(old_secret))
    assert answer.status_code == 401
    assert "created before credentials were bound to the audit log: an admin must record it with radtrace audit " \
        "rebind" in answer.json()["detail"]  # fmt: skip
    assert isinstance(log_in(store, "dr.old", PASSWORD, SETTINGS, host=None), LoginFailed)

    # The configured bootstrap secret vouches for its own row at start.
    ensure_bootstrap_admin(store, bootstrap, OPERATOR)
    assert client.get("/v1/verify", headers=_bearer(bootstrap)).status_code == 200

    done = {(item.name, item.outcome) for item in rebind_credentials(store, OPERATOR, None)}
    assert done == {
        ("old.qa", "recorded"),
        ("bootstrap-admin", "already recorded"),
        ("forged", "refused"),
        ("dr.old", "recorded"),
    }
    assert client.get("/v1/events", headers=_bearer(old_secret)).status_code == 200
    assert client.get("/v1/events", headers=_bearer(forged)).status_code == 401
    assert isinstance(log_in(store, "dr.old", PASSWORD, SETTINGS, host=None), SignedIn)
    assert [event["token_name"] for event in _events(store, "api_token_bound")] == ["bootstrap-admin", "old.qa"]


def test_radtrace_audit_rebind_says_what_it_recorded_and_exits_1_on_a_forged_token(tmp_path: Path) -> None:
    from tests_support import radtrace

    url = f"sqlite:///{tmp_path / 'radtrace.db'}"
    store = Store.from_url(url)
    upgrade(store)
    env = {"RADTRACE_DATA_DIR": str(tmp_path / "var"), "RADTRACE_STORE__URL": url}
    create_token(store, "qa.nurse", "qa", OPERATOR)
    _sql(store, "INSERT INTO api_tokens (name, role, token_sha256, created_at) VALUES ('forged', 'admin', :h, :t)",
         h="0" * 64, t=utc_now())  # fmt: skip
    store.dispose()
    done = radtrace("audit", "rebind", env=env)
    assert done.returncode == 1
    assert "token 'qa.nurse': already recorded" in done.stdout
    assert "token 'forged': refused: token 'forged' is not recorded in the audit log" in done.stderr
    assert "stay refused" in done.stderr


class AlwaysRehash(PasswordHasher):
    """A hasher that finds every stored hash out of date."""

    def check_needs_rehash(self, hash: str) -> bool:
        return True


def test_an_upgraded_password_hash_is_recorded_so_the_account_keeps_working(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from radtrace.console import accounts

    create_user(store, "dr.who", "radiologist", PASSWORD, OPERATOR)
    with monkeypatch.context() as patch:  # as after an argon2-cffi upgrade with new parameters
        patch.setattr(accounts, "_HASHER", AlwaysRehash())
        first = log_in(store, "dr.who", PASSWORD, SETTINGS, host=None)
    assert isinstance(first, SignedIn)
    assert first.cookie is not None
    assert resume_session(store, first.cookie, SETTINGS) is not None
    assert isinstance(log_in(store, "dr.who", PASSWORD, SETTINGS, host=None), SignedIn)
    assert [event["reason"] for event in _events(store, "console_user_bound")] == ["password hash upgraded"]
    assert _events(store, "tamper_detected") == []


def test_db_upgrade_records_the_tokens_and_accounts_from_before_so_nobody_is_locked_out(tmp_path: Path) -> None:
    """The upgrade itself rebinds: no radiologist or API client is refused the morning after an upgrade because
    nobody thought of 'radtrace audit rebind'; a forged row is still refused, and a later upgrade walks nothing."""
    from tests_support import radtrace

    url = f"sqlite:///{tmp_path / 'radtrace.db'}"
    store = Store.from_url(url)
    upgrade(store)
    secret = secrets.token_urlsafe(32)  # a token and an account as an earlier radtrace wrote them
    _sql(store, "INSERT INTO api_tokens (name, role, token_sha256, created_at) VALUES ('old.qa', 'qa', :h, :t)",
         h=hashlib.sha256(secret.encode()).hexdigest(), t=utc_now())  # fmt: skip
    _sql(store, "INSERT INTO console_users (name, role, password_hash, created_at, failed_logins) "
         "VALUES ('dr.old', 'radiologist', :h, :t, 0)", h=PasswordHasher().hash(PASSWORD), t=utc_now())  # fmt: skip
    AuditRecorder(store).record_many([
        AuditEvent(EventType.API_TOKEN_CREATED, OPERATOR, payload={"token_name": "old.qa", "role": "qa"}),
        AuditEvent(EventType.CONSOLE_USER_CREATED, OPERATOR,
                   payload={"user": "dr.old", "role": "radiologist", "password": True}),
    ])  # fmt: skip
    assert isinstance(log_in(store, "dr.old", PASSWORD, SETTINGS, host=None), LoginFailed)
    env = {"RADTRACE_DATA_DIR": str(tmp_path / "var"), "RADTRACE_STORE__URL": url}

    upgraded = radtrace("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "token 'old.qa': recorded" in upgraded.stdout
    assert "console account 'dr.old': recorded" in upgraded.stdout
    assert isinstance(log_in(store, "dr.old", PASSWORD, SETTINGS, host=None), SignedIn)
    with TestClient(create_api(store)) as api:
        assert api.get("/v1/events", headers=_bearer(secret)).status_code == 200
    bound = len(_events(store, "api_token_bound")) + len(_events(store, "console_user_bound"))
    assert bound == 2

    # serve migrates the embedded database in its start-up checks, and rebinds there too
    _sql(store, "INSERT INTO api_tokens (name, role, token_sha256, created_at) VALUES ('old.ris', 'qa', :h, :t)",
         h="1" * 64, t=utc_now())  # fmt: skip
    AuditRecorder(store).record(
        AuditEvent(EventType.API_TOKEN_CREATED, OPERATOR, payload={"token_name": "old.ris", "role": "qa"})
    )
    settings = load_settings(data_dir=tmp_path / "var", store={"url": url})
    [database] = [check for check in run_preflight(settings) if check.name == "database"]
    assert database.status == "ok", database.detail
    assert [event["token_name"] for event in _events(store, "api_token_bound")] == ["old.qa", "old.ris"]
    bound += 1

    again = radtrace("db", "upgrade", env=env)
    assert again.returncode == 0, again.stderr
    assert "recorded" not in again.stdout
    assert len(_events(store, "api_token_bound")) + len(_events(store, "console_user_bound")) == bound
    store.dispose()
