"""A decision on a draft withdrawn by a correction within its study says it was withdrawn and leads to the current
draft.

The PACS corrects the patient of an image within one study (P1 -> P9, same Study UID): revision 1's draft, read
from the P1 copy, is withdrawn, and revision 2 is read from the corrected one. A radiologist still on revision 1's
page who decides a finding got 409 "revision 2 of this study has been read since this page was loaded", under the
heading "the page was out of date": nothing said the draft they were deciding had been withdrawn, nor why. Now the
409's reason says the draft was withdrawn and why (re-sent under another patient in this study), the page's heading
says so and its button opens the current draft (revision 2, by the study's handle); a script's 409 names the
current draft's address. Real film (NIH ChestX-ray14), in-process listener, demo pipeline, console through the ASGI
app.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from console_support import csrf_of, study_path
from radtrace.store.engine import Store
from reassigned_support import film_as, first_read, read_first

pytestmark = pytest.mark.integration


def _reject_first_finding(client: object, page: str, shown: str, headers: dict[str, str], seen: bool) -> object:
    form = re.search(r'<form method="post" action="[^"]+/findings" class="finding-form"[^>]*>(.*?)</form>', shown, re.S)
    assert form is not None
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.group(1)))
    if not seen:  # a script: no seen field
        fields.pop("seen", None)
    fields.update(csrf_token=csrf_of(shown), decision="reject")
    return client.post(f"{page}/findings", data=fields, headers=headers, follow_redirects=False)  # type: ignore[attr-defined]


def test_a_decision_on_a_draft_withdrawn_within_its_study_says_so_and_leads_to_the_current_draft(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    with first_read(tmp_path, store, listener_port, accession="A", radiologist="rad.one") as site:
        client, study = site.console, site.study_uid
        page_1, page_2 = study_path(store, study, 1), study_path(store, study, 2)
        shown = client.get(page_1).text  # the radiologist opens revision 1

        corrected = film_as(tmp_path / "b.dcm", study_uid=study, sop_uid=site.sop_uid, patient_id="P9",
                            name="NINE^PAT", accession="A")  # fmt: skip
        read_first(site.pipeline, store, listener_port, corrected, study, revision=2)

        refused = _reject_first_finding(client, page_1, shown, {"accept": "text/html"}, seen=True)
        assert refused.status_code == 409  # type: ignore[attr-defined]
        body = refused.text  # type: ignore[attr-defined]
        heading = re.search(r"<h1>(.*?)</h1>", body, re.S)
        assert heading is not None
        assert heading.group(1) == "Not recorded: this draft was withdrawn"
        reason = re.search(r'<p class="error" role="alert" id="conflict-reason">(.*?)</p>', body, re.S)
        assert reason is not None
        said = html.unescape(reason.group(1))
        assert "the draft of revision 1 was withdrawn" in said, said
        assert "re-sent by the PACS under another patient in this study" in said, said
        current = re.search(r'<a class="button" id="reload-study" data-testid="current-draft" href="([^"]+)"', body)
        assert current is not None, body
        assert current.group(1) == page_2
        assert study not in body  # the study by its handle only

        by_script = _reject_first_finding(client, page_1, shown, {"accept": "application/json"}, seen=False)
        assert by_script.status_code == 409  # type: ignore[attr-defined]
        detail = by_script.json()["detail"]  # type: ignore[attr-defined]
        assert "was withdrawn" in detail
        assert detail.endswith(f"The current draft is {page_2}.")
