"""A ``.env`` file beside ``radtrace serve`` is not read (settings come from the environment and ``--config`` only, as
docs/configuration.md says), and serve says so when it sets ``RADTRACE_*`` variables that are not in effect.

Found by the first-hour exploration: people used to docker compose put RADTRACE_LISTENER__PORT and the allowed callers
in ./.env; serve ignored the file without a word and listened on 11112, refusing the PACS they had allowed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from radtrace.testing.services import free_port
from tests_support import startup_table

pytestmark = pytest.mark.unit

CALLERS = '[{"ae_title": "PACS01", "host": "10.1.2.0/24"}]'
DOTENV = f"""# site settings
POSTGRES_PASSWORD=not-radtrace's
RADTRACE_LISTENER__PORT=11104
export RADTRACE_LISTENER__ALLOWED_CALLERS='{CALLERS}'
"""


def _serve_checks(folder: Path, **env: str) -> tuple[int, dict[str, tuple[str, str]], str]:
    """``radtrace serve`` run in ``folder`` until its checks end (the QA API's port is held: exit 2)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")} | {"COLUMNS": "250"}
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        environment |= {
            "RADTRACE_DATA_DIR": str(folder / "var"), "RADTRACE_API__PORT": str(held.getsockname()[1]),
            "RADTRACE_MODEL__BACKEND": "demo", "RADTRACE_MODEL__DEMO": "true",
            "RADTRACE_LISTENER__PORT": env.pop("RADTRACE_LISTENER__PORT", str(free_port())),
        } | env  # fmt: skip
        result = subprocess.run([sys.executable, "-m", "radtrace", "serve"], cwd=folder, env=environment,
                                capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    return result.returncode, startup_table(result.stdout), result.stdout + result.stderr


def test_serve_says_a_dotenv_beside_it_is_not_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(DOTENV)
    code, rows, shown = _serve_checks(tmp_path)
    assert code == 2, shown
    assert rows["settings"] == (
        "warning",
        f"{tmp_path / '.env'} sets RADTRACE_LISTENER__PORT, RADTRACE_LISTENER__ALLOWED_CALLERS, but radtrace does not "
        "read .env files (settings come from the environment and --config only): these are not in effect. Load it "
        "into the shell first: set -a; . ./.env; set +a",
    )
    assert "11104" not in rows["DICOM port"][1]  # indeed not in effect


def test_a_dotenv_loaded_into_the_shell_is_not_warned_about(tmp_path: Path) -> None:
    port = str(free_port())
    (tmp_path / ".env").write_text(DOTENV.replace("11104", port))
    code, rows, shown = _serve_checks(tmp_path, RADTRACE_LISTENER__PORT=port,
                                      RADTRACE_LISTENER__ALLOWED_CALLERS=CALLERS)  # fmt: skip
    assert code == 2, shown
    assert rows["settings"] == ("ok", "loaded and valid")


def test_a_dotenv_without_radtrace_variables_is_none_of_its_business(tmp_path: Path) -> None:
    from radtrace.config import unread_dotenv

    (tmp_path / ".env").write_text("POSTGRES_PASSWORD=x\nMODELS_DIR=/srv/models\n")
    assert unread_dotenv(tmp_path, {}) is None
    assert unread_dotenv(tmp_path / "no-such-folder", {}) is None
