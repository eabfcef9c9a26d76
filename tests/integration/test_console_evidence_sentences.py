"""The evidence a study page shows beside each finding is the reasoning's sentence about it, whole, and only those.

Found on a night shift with the demo model's films: the Cardiomegaly row's evidence read "Heart: The heart is
enlarged, with a cardiothoracic ratio above 0." (the model wrote "above 0.55": the sentence was cut at the decimal
point, by the parser's recorded evidence and by the page's own sentence split), and the Support Devices row listed
"Airways: The trachea is midline." and "bibasilar linear opacities" ("line" found inside "midline" and "linear").
The reasoning panel also dropped all but the first of a run of marks ("fractures?!" read "fractures?").
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from console_support import (
    add_user,
    console_client,
    console_settings,
    finding_evidence,
    reported_study,
    sign_in,
    study_path,
)
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.schema import AuditEventRow
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade

pytestmark = pytest.mark.integration

HEART = "Heart: The heart is enlarged, with a cardiothoracic ratio above 0.55."
BONES = "Bones: Old rib fractures?! Spine intact..."
REASONING = [
    {"section": "devices", "text": "Devices: None."},
    {"section": "airways", "text": "Airways: The trachea is midline."},
    {"section": "lungs", "text": "Lungs: Bibasilar linear opacities. No sign of old tuberculosis. Outline normal."},
    {"section": "heart", "text": HEART},
    {"section": "bones", "text": BONES},
]
FINDINGS = [
    # as the parser recorded them: the evidence of Cardiomegaly cut at the decimal point
    {"label": "Cardiomegaly", "status": "present", "evidence": HEART[: HEART.index("0.") + 2]},
    {"label": "Support Devices", "status": "absent", "evidence": "Devices: None."},
]


def test_each_finding_shows_its_whole_sentences_and_no_word_that_only_contains_its_name(tmp_path: Path) -> None:
    store = Store.from_url(f"sqlite:///{tmp_path / 'radtrace.db'}")
    upgrade(store)
    settings = console_settings(tmp_path, store)
    study_uid = reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=91)
    with store.session() as session:
        recorded = session.scalar(
            sa.select(AuditEventRow.payload).where(
                AuditEventRow.study_uid == study_uid, AuditEventRow.event_type == "inference_completed"
            )
        )
    assert recorded is not None
    payload = json.loads(recorded)
    payload["reading"].update(reasoning=REASONING, findings=FINDINGS, impression="Cardiomegaly.")
    AuditRecorder(store).record(  # as the worker records a reading: the page shows the latest
        AuditEvent(EventType.INFERENCE_COMPLETED, Actor(user="worker"), study_uid=study_uid, payload=payload)
    )
    add_user(store, "dr.night", "radiologist")
    with console_client(store, settings) as client:
        sign_in(client, "dr.night")
        page = client.get(study_path(store, study_uid)).text

    assert finding_evidence(page, "Cardiomegaly") == [HEART]
    assert finding_evidence(page, "Support Devices") == ["Devices: None."]
    # the reasoning shows the heart's sentence as one, marked as the evidence of Cardiomegaly
    assert f'data-findings="Cardiomegaly"><bdi class="free-text">{html.escape(HEART)}</bdi></span>' in page
    # and writes every character of the model's text (a run of marks, "?!" or "...", lost all but its first)
    bones = re.search(r"<h3[^>]*>bones</h3>\s*<p>(.*?)</p>", page, re.S)
    assert bones is not None
    assert html.unescape(re.sub(r"<[^>]+>", "", bones.group(1))) == BONES
    store.dispose()
