"""A real film with Rescale Slope 0 (0028,1053), sent by dcmtk's storescu, is refused at C-STORE naming the element,
audited, and kept out of the spool, as Bits Stored above Bits Allocated is; the film itself, in the same association,
is stored.

Before, the listener answered Success and the worker, which refuses Rescale Slope 0 (every pixel would be the
intercept; radtrace.model.modality_lut), failed the study hours later, when the PACS could no longer be told.
The variant is tests/film_variants_support.rescale_slope_zero.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydicom import dcmwrite
from pydicom.uid import generate_uid

from film_variants_support import VARIANTS, film
from listener_support import audit_payloads, audit_types, listener_settings, rows, running
from radtrace.dicom_listener.dcmtk import storescu
from radtrace.store.engine import Store
from radtrace.store.models import Instance
from tests_support import as_part10

pytestmark = pytest.mark.integration


def test_a_film_with_rescale_slope_zero_is_refused_at_c_store_naming_the_element(
    tmp_path: Path, sqlite_store: Store, listener_port: int
) -> None:
    refused = VARIANTS["rescale_slope_zero"](*film("fuji"))
    assert refused.expect == "refused: (0028,1053) Rescale Slope"  # what the worker says of it
    files, uids = {}, {}
    for name, variant in (("rescale_slope_zero", refused.dataset), ("film", film("fuji")[0])):
        variant.SOPInstanceUID = uids[name] = generate_uid()
        files[name] = tmp_path / f"{name}.dcm"
        dcmwrite(files[name], as_part10(variant), enforce_file_format=True)
    settings = listener_settings(tmp_path, listener_port)
    with running(settings, sqlite_store):
        result = storescu([files["rescale_slope_zero"], files["film"]], listener_port, options=["--no-halt", "--debug"])
    # --no-halt: storescu sends the film after the refusal; --debug prints each response's status and comment
    statuses = re.findall(r"DIMSE Status +: (0x[0-9a-f]{4})", result.stderr)
    assert statuses == ["0xc210", "0x0000"], result.stderr  # Cannot understand, then Success for the film
    comment = "(0028,1053) Rescale Slope: 0, every pixel would be the intercept"
    assert f"(0000,0902) LO [{comment}]" in result.stderr, result.stderr
    [kept] = rows(sqlite_store, Instance)
    assert kept.sop_instance_uid == uids["film"]
    assert audit_types(sqlite_store)[1:-1] == ["instance_quarantined", "instance_received"]
    [refusal] = [json.loads(p) for p in audit_payloads(sqlite_store, "instance_quarantined")]
    assert refusal["reason"] == comment
    spooled = [p.name for p in settings.spool_dir.rglob("*") if p.is_file()]
    assert spooled == [Path(kept.path).name]  # only the film: nothing left in .incoming
    assert sorted(p.suffix for p in settings.quarantine_dir.iterdir()) == [".dcm", ".txt"]
