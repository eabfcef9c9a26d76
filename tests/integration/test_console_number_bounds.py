"""A number in a console address past what the database holds is refused naming it (422), not a 500.

(The same bound belongs on a study page's revision and an assessment file's seq, console/study_page.py: see
/work/notes/report-hostile-http-2.md.)

Before: ``/console/next?revision=99999999999999999999`` was 500 on SQLite ("Internal Server Error" and an
OverflowError traceback) and on PostgreSQL ("integer out of range"; its INTEGER column ends at 2**31 - 1).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from console_support import add_user, console_client, console_settings, sign_in
from radtrace.store.engine import Store

pytestmark = pytest.mark.integration

#: Past PostgreSQL's INTEGER, past a 64-bit integer.
ASKED = [
    ("revision", "/console/next?study=1.2.3&revision=2147483648"),
    ("revision", "/console/next?study=1.2.3&revision=99999999999999999999"),
    ("revision", "/console/studies/1.2.3/2147483648"),
    ("revision", "/console/studies/1.2.3/99999999999999999999"),
    ("seq", "/console/studies/1.2.3/1/assessments/9223372036854775808.dcm"),
]


def test_a_revision_past_the_database_integer_is_422_naming_it(store: Store, tmp_path: Path) -> None:
    add_user(store, "dr.bounds", "radiologist")
    with console_client(store, console_settings(tmp_path, store)) as client:
        assert sign_in(client, "dr.bounds").status_code == 200
        for name, address in ASKED:
            answer = client.get(address, follow_redirects=False)
            assert answer.status_code == 422, (address, answer.status_code, answer.text[:300])
            assert name in answer.text, address
            assert "Traceback" not in answer.text
