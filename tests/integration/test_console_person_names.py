"""The console writes a DICOM person name so that the family name is never in doubt: family name, comma, then
prefix, given and middle names, then the suffix ('DOE^JOHN' reads 'DOE, JOHN'), and the ideographic and phonetic
groups (after '=') in parentheses, not 'Doe John  Dr=ドウ ジョン' with the PN delimiters left in (found by sending a
film with such a name over DICOM). Before: components were only space-separated, so 'DOE^JOHN' read 'DOE JOHN' and
'JOHN^DOE' (a RIS that swapped them) read 'JOHN DOE': which part was the family name showed nowhere.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from console_support import add_user, console_client, console_settings, reported_study, sign_in, study_path
from radtrace.model.reader import StudyReader
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

#: three studies read by the pipeline (each costs a few seconds); more forms in unit/test_console_person_name_order
NAMES = {
    "Adams^John Robert^Quincy^Rev.^B.A.=ドウ^ジョン": "Adams, Rev. John Robert Quincy, B.A. (ドウ, ジョン)",
    "=山田^太郎=やまだ^たろう": "山田, 太郎 (やまだ, たろう)",
    "<b>EVIL</b>^<i>EVE</i>": "<b>EVIL</b>, <i>EVE</i>",  # escaped by the page, checked below
}


def test_worklist_and_study_page_show_the_family_name_first_and_marked(store: Store, tmp_path: Path) -> None:
    settings = console_settings(tmp_path, store)
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    studies = {name: reported_study(settings, store, reader, seed=70 + i, name=name) for i, name in enumerate(NAMES)}
    add_user(store, "dr.names", "radiologist")
    client = console_client(store, settings)
    sign_in(client, "dr.names")

    worklist = html.unescape(client.get("/console/worklist?filter=all").text)
    for name, shown in NAMES.items():
        assert f">{shown}</a>" in worklist, shown  # the row's link
        assert f"routine, {shown}, accession" in worklist  # what a screen reader announces
        page = client.get(study_path(store, studies[name]))
        assert page.status_code == 200
        [heading] = re.findall(r'<span class="patient-name" dir="auto">([^<]*)</span>', page.text)
        assert html.unescape(heading) == shown
    assert not re.search(r">[^<]*[=^][^<]*</a>", worklist.split("<tbody", 1)[-1])  # no PN delimiter in a name link
    raw = client.get("/console/worklist?filter=all").text
    assert "&lt;b&gt;EVIL&lt;/b&gt;, &lt;i&gt;EVE&lt;/i&gt;" in raw
    assert "<b>EVIL" not in raw
    assert "<i>EVE" not in raw
