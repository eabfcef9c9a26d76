"""Whatever a model server calls its model, every draft names it the same way and stays valid.

The model's identity (name, revision, profile, profile version, weights digest) comes from the backend, and with a
model server from a peer: it reaches the SR (observer device, TID 4019 algorithm, Manufacturer's Model Name), the
ORU's NTE and FHIR's Device. Only one name with controls was tested (test_drafts_text_rule); this is the property over
any text: dciodvfy 0 errors, hl7apy STRICT, a Bundle fhir.resources accepts, and the SR, the ORU and FHIR agreeing.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from pydicom import dcmread

from drafts_readback_support import one_image_drafts, read_back
from radtrace.reporting.hl7 import unescape
from radtrace.reporting.sr import draft_identity
from reporting_support import IDENTITY, REAL_FILMS, SPECIAL_CHARACTERS

pytestmark = pytest.mark.integration

WHEN = datetime(2026, 12, 6, 3, 30, tzinfo=UTC)
FILM = dcmread(REAL_FILMS / "nih-cxr14-00000001_000-dx-frontal-mono2-8bit.dcm", stop_before_pixels=True)
#: Text a peer may send: every special character, any character pydicom could decode (no lone surrogates: a JSON
#: reply holds none once decoded), and long runs.
identity_text = st.lists(
    st.one_of(st.sampled_from([*SPECIAL_CHARACTERS, "x" * 70, "山" * 30]), st.characters()), max_size=30
).map(lambda chars: "".join(chars).encode("utf-8", "replace").decode("utf-8"))


# No shrinking: each example runs dciodvfy; the falsifying example is printed as generated.
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(
    name=identity_text,
    revision=st.one_of(st.none(), identity_text),
    profile=identity_text,
    version=identity_text,
    weights=st.one_of(st.none(), identity_text),
)
@example(name="", revision="", profile="", version="", weights="")
@example(name="CXR\x85|^~&\\", revision="r\r\nMSH|", profile="p\\E\\", version="\ue000", weights="\x00" * 64)
@example(name="x" * 70, revision="山" * 30, profile=" ", version="\u3000", weights="0" * 64)
def test_property_any_model_identity_gives_three_valid_drafts_that_name_it_alike(
    tmp_path: Path, name: str, revision: str | None, profile: str, version: str, weights: str | None
) -> None:
    identity = IDENTITY.model_copy(
        update={
            "model_name": name,
            "revision": revision,
            "profile": profile,
            "profile_version": version,
            "weights_sha256": weights,
        }
    )
    files = one_image_drafts(FILM, WHEN, identity=identity)
    back = read_back(files, tmp_path)  # dciodvfy; hl7apy STRICT
    assert back.sr_errors == []
    named = draft_identity(identity)
    sr = dcmread(io.BytesIO(files.sr))
    assert sr.ManufacturerModelName == named.model_name
    [nte] = [segment for segment in back.segments if segment[0] == "NTE" and segment[1] == "2"]
    assert unescape(nte[3]).startswith(f"Model: {named.model_name} ")
    resources = [entry["resource"] for entry in json.loads(files.fhir or "")["entry"]]
    [device] = [resource for resource in resources if resource["resourceType"] == "Device"]
    assert device["deviceName"] == [{"name": named.model_name, "type": "model-name"}]
