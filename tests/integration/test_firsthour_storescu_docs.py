"""docs/operations.md's storescu commands, run as written against a real listener, store every real film.

Found by the first-hour exploration: hospital IT tests a new DICOM node with dcmtk's storescu, whose default proposes
only uncompressed transfer syntaxes, so the JPEG 2000 and JPEG-LS films failed inside storescu ('unable to convert
dataset', 0006:020e) and radtrace never saw them; its default calling AE 'STORESCU' is refused as well. Nothing said
which storescu options send them. Fails until docs/operations.md has the section.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest

from listener_support import listener_settings, rows, running
from radtrace.store.engine import Store
from radtrace.store.models import Instance

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
FILMS = sorted((ROOT / "tests" / "data" / "real-cxr").glob("*.dcm"))
SECTION = "## Testing the listener with dcmtk's storescu"


def documented_commands() -> list[list[str]]:
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    assert SECTION in text, f"docs/operations.md has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    return [shlex.split(line) for block in blocks for line in block.splitlines() if line.strip()]


@pytest.mark.skipif(shutil.which("storescu") is None, reason="dcmtk is installed by .ci/run")
def test_the_documented_storescu_commands_store_every_human_film(
    tmp_path: Path, store: Store, listener_port: int
) -> None:
    commands = documented_commands()
    human = [film for film in FILMS if not film.name.startswith("canine")]
    named = {Path(word).name for command in commands for word in command}
    assert {film.name for film in human} <= named, "a real human film has no documented command"
    settings = listener_settings(tmp_path, listener_port, allowed_callers=[{"ae_title": "RADTRACE-SEND"}])
    with running(settings, store):
        for command in commands:
            assignments = dict(word.split("=", 1) for word in command if re.fullmatch(r"[A-Z_]+=.*", word))
            argv = [word for word in command if not re.fullmatch(r"[A-Z_]+=.*", word)]
            assert argv[0] == "storescu"
            argv = [str(listener_port) if word == "11112" else word for word in argv]
            result = subprocess.run(
                argv, cwd=ROOT, env=os.environ | assignments, capture_output=True, text=True, timeout=120, check=False
            )
            assert result.returncode == 0, (command, result.stdout, result.stderr)
    stored = {row.sop_instance_uid for row in rows(store, Instance)}
    for film in human:
        uid = str(pydicom.dcmread(film, stop_before_pixels=True, force=True).SOPInstanceUID)
        assert uid in stored, f"{film.name} was not stored"
