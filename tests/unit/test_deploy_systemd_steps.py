"""deploy/README.md's systemd steps work on a fresh host (seen from outside: ``install … /etc/radtrace/radtrace.env``
failed with "No such file or directory", /etc/radtrace not existing on a fresh Debian).

The steps that write files (``install``, ``cp``) are run as written, with the host's absolute folders moved under a
private root and the ``radtrace`` group replaced by the caller's; ``systemctl``, ``useradd``, ``pip`` and ``python
-m venv`` are not run (no systemd here). Every file a unit the steps enable requires (an ``EnvironmentFile=``
without ``-``) must be made by the steps: a timer enabled without its unit's file fails at its first run.
"""

from __future__ import annotations

import grp
import os
import re
import shlex
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "deploy" / "README.md"
SYSTEMD = ROOT / "deploy" / "systemd"
_RUN = ("install", "cp", "mkdir")  # the steps that make files; the others need systemd, a user database or pip


def _steps() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("## systemd", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in section.splitlines() if line.startswith("    ") and line.strip()]


def _run_on(root: Path, steps: list[str]) -> subprocess.CompletedProcess[str]:
    group = grp.getgrgid(os.getgid()).gr_name
    script = ["set -e"]
    for step in steps:
        for command in step.split("#", 1)[0].split("&&"):
            words = shlex.split(command)
            if not words or words[0] not in _RUN:
                continue
            words = [
                group if w == "radtrace" and i and words[i - 1] in ("-g", "-o") else w for i, w in enumerate(words)
            ]
            words = [f"{root}{w}" if w.startswith(("/etc/", "/opt/", "/var/")) else w for w in words]
            script.append(" ".join(w if "*" in w else shlex.quote(w) for w in words))  # a glob stays one
    return subprocess.run(["bash", "-c", "\n".join(script)], cwd=ROOT, capture_output=True, text=True, check=False)


def test_the_systemd_steps_make_their_files_on_a_fresh_host(tmp_path: Path) -> None:
    (tmp_path / "etc" / "systemd" / "system").mkdir(parents=True)  # what a fresh Debian has; not /etc/radtrace

    done = _run_on(tmp_path, _steps())

    assert done.returncode == 0, done.stderr
    env = tmp_path / "etc" / "radtrace" / "radtrace.env"
    assert env.read_text(encoding="utf-8") == (ROOT / "deploy" / "radtrace.env.example").read_text(encoding="utf-8")
    assert stat.S_IMODE(env.stat().st_mode) == 0o640
    assert stat.S_IMODE(env.parent.stat().st_mode) & 0o007 == 0  # settings (passwords) not for every user
    assert sorted(p.name for p in (tmp_path / "etc" / "systemd" / "system").iterdir()) == sorted(
        p.name for p in SYSTEMD.iterdir()
    )


def test_every_file_an_enabled_unit_requires_is_made_by_the_steps(tmp_path: Path) -> None:
    (tmp_path / "etc" / "systemd" / "system").mkdir(parents=True)
    steps = _steps()
    assert _run_on(tmp_path, steps).returncode == 0
    enabled = " ".join(step for step in steps if step.startswith("systemctl enable"))
    units = [unit for unit in SYSTEMD.iterdir() if unit.stem.split("@")[0] in enabled or unit.suffix == ".service"]
    required = {
        match
        for unit in units
        for match in re.findall(r"^EnvironmentFile=([^-\s]\S*)$", unit.read_text(encoding="utf-8"), re.MULTILINE)
    }
    assert required, "the checkpoint unit requires its key file"
    for path in sorted(required):
        made = tmp_path / path.lstrip("/")
        assert made.is_file(), f"{path} is required by a unit the steps enable but no step makes it"
        assert stat.S_IMODE(made.stat().st_mode) == 0o600, f"{path} holds a key: root only"
