"""The QA API says which draft is missing, or cannot be read, without telling a client where drafts lie on the server.

Before: ``GET /v1/studies/{uid}/drafts/7`` answered 404 "no draft is kept for revision 7 of study <uid> under
/var/lib/radtrace/drafts", and a damaged SR 404 "the kept SR /var/lib/.../sr.dcm cannot be read: ...".
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from radtrace.audit.api import create_api
from radtrace.audit.events import Actor
from radtrace.audit.tokens import create_token
from radtrace.reporting.draft_store import DRAFT_FILES
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

STUDY = "1.2.826.0.1.3680043.8.498.77"


def test_a_missing_or_unreadable_draft_is_named_without_the_servers_folders(store: Store, tmp_path: Path) -> None:
    drafts = tmp_path / "drafts"
    damaged = drafts / STUDY / "2"
    damaged.mkdir(parents=True)
    (damaged / DRAFT_FILES["sr"]).write_bytes(b"not DICOM at all")
    secret = create_token(store, "qa.drafts", "qa", Actor(user="admin")).secret
    headers = {"Authorization": f"Bearer {secret}"}
    with TestClient(create_api(store, drafts_dir=drafts), raise_server_exceptions=False) as client:
        missing = client.get(f"/v1/studies/{STUDY}/drafts/7", headers=headers)
        unreadable = client.get(f"/v1/studies/{STUDY}/drafts/2", headers=headers)
    assert missing.status_code == 404
    assert missing.json()["detail"] == "no draft is kept for revision 7 of this study"
    assert unreadable.status_code == 500  # the server's fault, not the client's (before: 404)
    assert unreadable.json()["detail"] == (
        "the kept SR of revision 2 of this study cannot be read ('radtrace drafts show' says why)"
    )
    for answer in (missing, unreadable):
        assert str(tmp_path) not in answer.text
        assert "drafts/" not in answer.text
