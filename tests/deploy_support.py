"""The README's systemd install steps, run under a private root (tests/unit/test_deploy_systemd_*.py)."""

from __future__ import annotations

import grp
import os
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "deploy" / "README.md"
_RUN = ("install", "cp", "mkdir")  # the steps that make files; the others need systemd, a user database or pip


def install_steps() -> list[str]:
    """The indented command lines of deploy/README.md's section 'systemd (one bare-metal host)', in order."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## systemd", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in section.splitlines() if line.startswith("    ") and line.strip()]


def run_steps_under(root: Path, steps: list[str]) -> subprocess.CompletedProcess[str]:
    """Run the steps that make files (``install``, ``cp``, ``mkdir``) with /etc, /opt and /var moved under ``root`` and
    the ``radtrace`` group replaced by the caller's."""
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
