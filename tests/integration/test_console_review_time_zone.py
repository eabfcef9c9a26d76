"""The review page writes its times in the site's zone (``qa.time_zone``), as the QA dashboard and the audit explorer
do, with the explorer's own function (:func:`radtrace.console.times.shown_time`) and the zone named.

Before: the revisions list said "reported 2026-01-10 03:30 UTC" and the conflict page "dr.one recorded “accepted”
… at 2026-07-10 03:30:00 UTC" whatever ``qa.time_zone`` was, so a radiologist in New York saw a decision made at
23:30 on 9 July as one made on the 10th, and the dashboard and the explorer said otherwise. The worklist's failed
studies, the same.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from audit_support import frozen_clock
from console_support import add_user, console_client, console_settings, reported_study, sign_in, study_path
from radtrace.config import Settings
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.models import Revision, RevisionState, Study
from radtrace.testing.studies import ImageSpec, StudySpec, make_study
from worker_support import spool_study

pytestmark = pytest.mark.integration

WINTER = datetime(2026, 1, 10, 3, 30, tzinfo=UTC)  # 2026-01-09 22:30 EST
SUMMER = datetime(2026, 7, 10, 3, 30, 5, tzinfo=UTC)  # 2026-07-09 23:30:05 EDT


def _settings(store: Store, tmp_path: Path, zone: str) -> Settings:
    base = console_settings(tmp_path, store)
    return base.model_copy(update={"qa": base.qa.model_copy(update={"time_zone": zone})})


def _finding_form(page: str, index: int) -> dict[str, str]:
    forms = re.findall(
        r'<form method="post" action="[^"]+/findings" class="finding-form"[^>]*>(.*?)</form>', page, re.S
    )
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', forms[index]))


def _reported_in_winter(store: Store, study_uid: str) -> None:
    with store.session() as session:
        study_id = session.scalar(sa.select(Study.id).where(Study.study_uid == study_uid))
        session.execute(sa.update(Revision).where(Revision.study_id == study_id).values(reported_at=WINTER))


def _signed_in(store: Store, settings: Settings, name: str) -> TestClient:
    add_user(store, name, "radiologist")
    client = console_client(store, settings)
    sign_in(client, name)
    return client


def _late_decision(store: Store, tmp_path: Path, zone: str, seed: int) -> tuple[str, str]:
    """(the study page, the conflict page of a decision sent from a page loaded before dr.one's at SUMMER)."""
    settings = _settings(store, tmp_path, zone)
    study_uid = reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=seed)
    _reported_in_winter(store, study_uid)
    url = study_path(store, study_uid)
    with _signed_in(store, settings, "dr.one") as one, _signed_in(store, settings, "dr.two") as two:
        page_one, page_two = one.get(url).text, two.get(url).text
        with frozen_clock(SUMMER):
            accepted = one.post(f"{url}/findings", data={**_finding_form(page_one, 0), "decision": "accept"},
                                follow_redirects=False)  # fmt: skip
        assert accepted.status_code == 303
        late = two.post(f"{url}/findings", data={**_finding_form(page_two, 0), "decision": "reject"},
                        follow_redirects=False)  # fmt: skip
        assert late.status_code == 409
        return two.get(url).text, late.text


def test_the_review_page_writes_its_times_in_the_sites_zone_and_names_it(store: Store, tmp_path: Path) -> None:
    page, conflict = _late_decision(store, tmp_path, "America/New_York", seed=141)
    assert "reported 2026-01-09 22:30:00 EST" in page
    assert "Times are in America/New_York (the setting qa.time_zone)" in page
    assert "UTC" not in re.sub(r"\s+", " ", page.split("<h2>Revisions</h2>", 1)[1])
    assert "recorded “accepted” for" in conflict
    assert "at 2026-07-09 23:30:05 EDT, after this page was loaded" in conflict


def test_a_site_in_utc_sees_utc_as_before(store: Store, tmp_path: Path) -> None:
    page, conflict = _late_decision(store, tmp_path, "UTC", seed=142)
    assert "reported 2026-01-10 03:30:00 UTC" in page
    assert "Times are in" not in page
    assert "at 2026-07-10 03:30:05 UTC, after this page was loaded" in conflict


@pytest.mark.parametrize(("zone", "shown"), [("America/New_York", "2026-01-09 22:30:00 EST"),
                                             ("UTC", "2026-01-10 03:30:00 UTC")])  # fmt: skip
def test_the_worklists_failed_studies_are_dated_in_the_sites_zone(
    store: Store, tmp_path: Path, zone: str, shown: str
) -> None:
    """Before: the failed list said '2026-01-10 03:30 UTC' on a New York site too."""
    settings = _settings(store, tmp_path, zone)
    spec = StudySpec(patient_name="ZONE^FAILED", seed=143)
    failed_uid, _ = spool_study(settings, store, make_study(spec, [ImageSpec()]), state=RevisionState.FAILED)
    with store.session() as session:
        revision = session.scalar(sa.select(Revision).join(Study).where(Study.study_uid == failed_uid))
        assert revision is not None
        revision.reason, revision.finished_at = "inference failed after 3 attempts", WINTER
    with _signed_in(store, settings, "dr.failed") as client:
        page = client.get("/console/worklist?filter=failed").text
    [row] = re.findall(r'<tr class="row failed".*?</tr>', page, re.S)
    assert f'<td class="num">{shown}</td>' in row
