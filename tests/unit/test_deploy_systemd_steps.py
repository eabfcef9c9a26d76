"""deploy/README.md's systemd steps work on a fresh host (seen from outside: ``install … /etc/radtrace/radtrace.env``
failed with "No such file or directory", /etc/radtrace not existing on a fresh Debian).

The steps that write files (``install``, ``cp``) are run as written, with the host's absolute folders moved under a
private root and the ``radtrace`` group replaced by the caller's; ``systemctl``, ``useradd``, ``pip`` and ``python
-m venv`` are not run (no systemd here). Every file a unit the steps enable requires (an ``EnvironmentFile=``
without ``-``) must be made by the steps: a timer enabled without its unit's file fails at its first run.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

from deploy_support import README, install_steps, run_steps_under

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "deploy" / "systemd"
UNIT_BINARY = "/opt/radtrace/venv/bin/radtrace"


def test_the_systemd_steps_make_their_files_on_a_fresh_host(tmp_path: Path) -> None:
    (tmp_path / "etc" / "systemd" / "system").mkdir(parents=True)  # what a fresh Debian has; not /etc/radtrace

    done = run_steps_under(tmp_path, install_steps())

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
    steps = install_steps()
    assert run_steps_under(tmp_path, steps).returncode == 0
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


def _site_steps() -> list[str]:
    """The README's steps for a host of a site of several hosts (after the one-host steps)."""
    section = README.read_text(encoding="utf-8").split("## systemd: several hosts", 1)[1].split("\n## ", 1)[0]
    return [line.strip() for line in section.splitlines() if line.startswith("    ") and line.strip()]


def test_a_gpu_host_of_a_site_enables_its_workers_alone_and_starts_them_once_the_shared_data_is_mounted(
    tmp_path: Path,
) -> None:
    """Found following the systemd section for a second host: it knew one host only, so a GPU host enabled
    radtrace.target too (a second listener, a second dispatcher with the reconciler the site must run once, a second
    API), and nothing held the units until the NFS export was mounted: StateDirectory= made an empty local
    /var/lib/radtrace and the worker read nothing the listener spooled."""
    (tmp_path / "etc" / "systemd" / "system").mkdir(parents=True)
    steps = _site_steps()
    assert run_steps_under(tmp_path, install_steps() + steps).returncode == 0

    enabling = [step.split("#", 1)[0].split("systemctl enable", 1)[1] for step in steps if "systemctl enable" in step]
    enabled = [word for words in enabling for word in shlex.split(words) if not word.startswith("-")]
    assert enabled, steps
    assert all(unit.startswith("radtrace-worker@") for unit in enabled), enabled  # no second listener or dispatcher

    worker = (SYSTEMD / "radtrace-worker@.service").read_text(encoding="utf-8")
    data_dir = re.search(r"^Environment=RADTRACE_DATA_DIR=(\S+)$", worker, re.MULTILINE)
    assert data_dir is not None
    (fstab,) = [shlex.split(step)[1] for step in steps if step.startswith("echo") and "/etc/fstab" in step]
    _source, mount_point, kind, options = fstab.split()[:4]
    assert (mount_point, kind) == (data_dir[1], "nfs4")
    assert "_netdev" in options.split(",")
    drop_in = tmp_path / "etc" / "systemd" / "system" / "radtrace-.service.d" / "shared-data.conf"
    assert f"RequiresMountsFor={data_dir[1]}" in drop_in.read_text(encoding="utf-8").splitlines()

    # systemd applies radtrace-.service.d/ to every radtrace-*.service: verify reads it with the units, clean
    units = tmp_path / "units"
    shutil.copytree(tmp_path / "etc" / "systemd" / "system", units)
    for unit in units.glob("radtrace*"):
        if unit.is_file():
            text = unit.read_text(encoding="utf-8")
            unit.write_text(text.replace(UNIT_BINARY, str(Path(sys.executable).parent / "radtrace")))
    verify = shutil.which("systemd-analyze")
    assert verify, "systemd-analyze is not installed (Debian's systemd)"
    result = subprocess.run([verify, "verify", "--man=no", "radtrace-worker@0.service", "radtrace-listener.service"],
                            cwd=units, env=os.environ | {"SYSTEMD_UNIT_PATH": f"{units}:"}, capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    drop_in_in_units = units / "radtrace-.service.d" / "shared-data.conf"
    drop_in_in_units.write_text(drop_in_in_units.read_text(encoding="utf-8") + "RequiresMountsFr=/typo\n")
    misspelt = subprocess.run([verify, "verify", "--man=no", "radtrace-worker@0.service"], cwd=units,
                              env=os.environ | {"SYSTEMD_UNIT_PATH": f"{units}:"}, capture_output=True, text=True,
                              check=False)  # fmt: skip
    assert "RequiresMountsFr" in misspelt.stderr, misspelt.stderr  # the drop-in is read: a typo in it is said
