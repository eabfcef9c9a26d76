"""deploy/systemd runs the ATNA audit forwarder as its own unit, hardened as the others, not restarted after exit 2;
and every unit's ``Documentation=`` names a file the README's install steps make.

Before, no unit ran ``radtrace audit forward``: a host set up from deploy/systemd sent no audit trail to the
hospital's audit record repository (``radtrace serve`` runs it as its ``atna`` child; the units run serve's children
one by one, and had none for it). And every unit's ``Documentation=file:///opt/radtrace/docs/operations.md`` named a
file no step made (a wheel installs no docs/): ``systemctl status`` showed a path that was not there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deploy_support import install_steps, run_steps_under

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "deploy" / "systemd"
UNIT_BINARY = "/opt/radtrace/venv/bin/radtrace"
FORWARDER = "radtrace-audit-forward.service"
#: What a unit may set beside the hardening every long-running unit shares (its command, restarts, stop, limits).
_OWN = ("Description", "ExecStart", "Type", "RestartSec", "TimeoutStopSec", "KillMode", "LimitNOFILE",
        "AmbientCapabilities", "CapabilityBoundingSet", "PrivateDevices")  # fmt: skip


def _directives(unit: Path, section: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    current = ""
    for line in unit.read_text(encoding="utf-8").splitlines():
        if line.startswith("["):
            current = line.strip("[]")
        elif line and not line.startswith("#") and current == section:
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_a_unit_runs_the_audit_forwarder_and_systemd_does_not_restart_it_after_exit_2() -> None:
    unit = SYSTEMD / FORWARDER
    assert unit.is_file(), "no systemd unit runs 'radtrace audit forward'"
    service = _directives(unit, "Service")
    assert service["ExecStart"] == [f"{UNIT_BINARY} audit forward"]
    assert service["Restart"] == ["on-failure"]  # an ARR or database outage: it starts again
    # exit 2: a newer floor stopped it, a refused setting, a tampered tail; each wants a person, not a loop
    assert "2" in " ".join(service["RestartPreventExitStatus"]).split()
    unit_section = _directives(unit, "Unit")
    assert "radtrace-db-upgrade.service" in " ".join(unit_section["After"]).split()
    assert _directives(unit, "Install")["WantedBy"] == ["radtrace.target"]


def test_the_forwarder_unit_has_every_long_running_units_hardening() -> None:
    shared = [_directives(SYSTEMD / name, "Service") for name in ("radtrace-listener.service",
              "radtrace-dispatcher.service", "radtrace-api.service", "radtrace-worker@.service")]  # fmt: skip
    common = {key: value for key, value in shared[0].items() if key not in _OWN and all(s.get(key) == value
              for s in shared)}  # fmt: skip
    assert {"NoNewPrivileges", "ProtectSystem", "User", "EnvironmentFile", "RestartPreventExitStatus"} <= set(common)
    forwarder = _directives(SYSTEMD / FORWARDER, "Service")
    assert {key: forwarder.get(key) for key in common} == common
    assert forwarder["PrivateDevices"] == ["yes"]  # it needs no device (the worker alone needs /dev/nvidia*)


def test_the_forwarder_unit_passes_systemd_analyze_verify_and_a_misspelt_directive_is_said(tmp_path: Path) -> None:
    verify = shutil.which("systemd-analyze")
    assert verify, "systemd-analyze is not installed (Debian's systemd)"
    units = tmp_path / "units"
    units.mkdir()
    for unit in SYSTEMD.iterdir():
        text = unit.read_text(encoding="utf-8").replace(UNIT_BINARY, str(Path(sys.executable).parent / "radtrace"))
        (units / unit.name).write_text(text, encoding="utf-8")

    def verified() -> subprocess.CompletedProcess[str]:
        return subprocess.run([verify, "verify", "--man=no", FORWARDER], cwd=units, capture_output=True, text=True,
                              env=os.environ | {"SYSTEMD_UNIT_PATH": f"{units}:"}, check=False)  # fmt: skip

    result = verified()
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    text = (units / FORWARDER).read_text(encoding="utf-8")
    (units / FORWARDER).write_text(text.replace("RestartPreventExitStatus=", "RestartPreventExitStatu="))
    assert "RestartPreventExitStatu" in verified().stderr  # verify reads this unit: a typo in it is said


def test_the_readme_enables_the_forwarder_on_one_host(tmp_path: Path) -> None:
    steps = install_steps()
    enabling = [step for step in steps if step.startswith("systemctl enable") and FORWARDER in step]
    assert enabling, steps
    readme = (ROOT / "deploy" / "README.md").read_text(encoding="utf-8")
    assert "one host of a site" in readme


def test_every_units_documentation_is_a_file_the_install_steps_make(tmp_path: Path) -> None:
    (tmp_path / "etc" / "systemd" / "system").mkdir(parents=True)
    done = run_steps_under(tmp_path, install_steps())
    assert done.returncode == 0, done.stderr
    pointed = {
        (unit.name, target)
        for unit in SYSTEMD.iterdir()
        for line in _directives(unit, "Unit").get("Documentation", [])
        for target in line.split()
    }
    assert {name for name, _ in pointed} == {unit.name for unit in SYSTEMD.iterdir()}  # every unit says where
    for name, target in sorted(pointed):
        assert target.startswith("file:///"), f"{name}: {target} (hospital hosts are often offline: a file here)"
        made = tmp_path / target.removeprefix("file:///")
        assert made.is_file(), f"{name}: Documentation={target}, which no install step makes"
        assert made.read_text(encoding="utf-8") == (ROOT / "docs" / made.name).read_text(encoding="utf-8")
