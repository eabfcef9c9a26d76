"""The QA API's kept-draft listing tells a client what it can use: each file's kind, name, media type, size,
SHA-256 and the API address to fetch it from, never where the file lies on the server.

The draft is made by the real pipeline (demo backend, console_support) and listed, read and fetched through
create_api with a qa token, as a QA client would.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from console_support import console_settings, reported_study
from radtrace.audit.api import create_api
from radtrace.audit.events import Actor
from radtrace.audit.tokens import create_token
from radtrace.model.reader import StudyReader
from radtrace.reporting.draft_store import DRAFT_FILES, drafts_root
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration


def test_the_drafts_listing_names_files_by_what_a_client_can_fetch_not_by_server_paths(
    store: Store, tmp_path: Path
) -> None:
    settings = console_settings(tmp_path, store)
    study_uid = reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=83)
    folder = drafts_root(settings) / study_uid / "1"
    secret = create_token(store, "qa.reviewer", "qa", Actor(user="admin")).secret
    headers = {"Authorization": f"Bearer {secret}"}
    with TestClient(create_api(store, drafts_dir=drafts_root(settings))) as client:
        listing = client.get(f"/v1/studies/{study_uid}/drafts", headers=headers)
        view = client.get(f"/v1/studies/{study_uid}/drafts/1", headers=headers)
        assert listing.status_code == view.status_code == 200
        for body in (listing.text, view.text):  # the server's layout is not told, in any field
            assert str(tmp_path) not in body
            assert str(folder) not in body
        (revision,) = listing.json()
        assert revision["study_uid"] == study_uid
        assert revision["revision"] == 1
        assert revision["url"] == f"/v1/studies/{study_uid}/drafts/1"
        kept = {kind: folder / name for kind, name in DRAFT_FILES.items() if (folder / name).is_file()}
        assert {"sr", "hl7", "fhir"} <= set(kept)
        assert [file["kind"] for file in revision["files"]] == [kind for kind in DRAFT_FILES if kind in kept]
        for file in revision["files"]:
            data = kept[file["kind"]].read_bytes()
            assert file["name"] == kept[file["kind"]].name
            assert file["size"] == len(data)
            assert file["sha256"] == hashlib.sha256(data).hexdigest()
            assert file["url"] == f"/v1/studies/{study_uid}/drafts/1/{file['kind']}"
            fetched = client.get(file["url"], headers=headers)
            assert fetched.status_code == 200
            assert fetched.content == data
            assert fetched.headers["content-type"].startswith(file["media_type"])
        assert view.json()["files"] == revision["files"]  # the read-back view names its files the same way
        document = client.get("/openapi.json").json()
        listed = document["paths"]["/v1/studies/{study_uid}/drafts"]["get"]["responses"]["200"]
        assert "KeptRevision" in json.dumps(listed)  # the listing's shape is documented
        described = document["components"]["schemas"]["DraftFile"]["properties"]
        assert {"kind", "name", "media_type", "size", "sha256", "url"} <= set(described)
