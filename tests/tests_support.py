"""Helpers shared by test modules (not fixtures): running the real ``radtrace`` command, dicom3tools, and writing a
changed film as a Part 10 file."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

# dciodvfy warnings that every radtrace SR draws and that are not faults: radtrace's private coding scheme, and (for
# sources lacking Study Date / Study ID / Patient ID) that the SR cannot go into a DICOMDIR.
PRIVATE_SCHEME_WARNING = "Warning - Unrecognized defined term <99RADTRACE> for value 1 of attribute <Coding Scheme"
DICOMDIR_WARNING = "Warning - Missing attribute or value that would be needed to build DICOMDIR"


def free_port_pair() -> int:
    """A free port P whose P + 1 is free too, for what binds two in a row (listener processes' metrics ports, the
    worker's and the dispatcher's)."""
    from radtrace.testing.services import free_port

    return free_port(consecutive=2)


def startup_table(stdout: str) -> dict[str, tuple[str, str]]:
    """``radtrace serve``'s start-up table as check -> (result, detail), a detail wrapped over several lines joined
    again."""
    rows: dict[str, tuple[str, str]] = {}
    name = ""
    for line in stdout.splitlines():
        parts = line.split("│")
        if len(parts) < 5:
            continue
        if parts[1].strip():
            name = parts[1].strip()
            rows[name] = (parts[2].strip(), parts[3].strip())
        elif name:
            rows[name] = (rows[name][0], f"{rows[name][1]} {parts[3].strip()}")
    return rows


@contextlib.contextmanager
def small_tmpfs(mount_point: Path, size: str = "16m") -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``mount_point`` (created), unmounted afterwards: a file system a test can
    fill. Skips where mounting is not allowed (not root, no CAP_SYS_ADMIN)."""
    mount_point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def fill_file_system(folder: Path) -> Path:
    """Fill ``folder``'s file system to the last block with one file; returns that file (remove it to free the space).
    Only ENOSPC ends the filling; any other error is raised."""
    import errno

    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        piece = 1 << 20
        while piece:
            try:
                os.write(fd, b"\0" * piece)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                piece //= 2
    finally:
        os.close(fd)
    return filler


def radtrace(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real command in a subprocess (in ``cwd``), without the caller's RADTRACE_* variables."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")}
    environment.update({"COLUMNS": "200"} | (env or {}))
    return subprocess.run(
        [sys.executable, "-m", "radtrace", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )


@dataclass(frozen=True)
class ApiProcess:
    """A ``radtrace api`` started by :func:`running_api`."""

    port: int
    process: subprocess.Popen[bytes]
    log_file: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")


@contextlib.contextmanager
def running_api(env: dict[str, str], log_file: Path, timeout_s: float = 60) -> Iterator[ApiProcess]:
    """The real ``radtrace api`` in a process of its own on a free port, with ``env`` in place of the caller's
    RADTRACE_* variables and its output in ``log_file``; yielded once /healthz answers 200, terminated after."""
    from radtrace.testing.services import free_port

    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")}
    environment |= env | {"RADTRACE_API__PORT": str(port)}
    with log_file.open("wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "radtrace", "api"], env=environment, stdout=output,
                                   stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            assert process.poll() is None, f"radtrace api exited: {log_file.read_text(errors='replace')[-2000:]}"
            assert time.monotonic() < deadline, f"radtrace api did not answer /healthz within {timeout_s:g} s"
            time.sleep(0.1)
        yield ApiProcess(port, process, log_file)
    finally:
        process.terminate()
        process.wait(timeout=30)


def dciodvfy_errors(path: Path) -> list[str]:
    """The lines dicom3tools' ``dciodvfy`` reports as errors for the DICOM file at ``path`` (warnings left out)."""
    found = shutil.which("dciodvfy")
    assert found is not None, "dciodvfy (Debian package dicom3tools) is not installed"
    result = subprocess.run([found, str(path)], capture_output=True, text=True, timeout=60, check=False)
    return [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def dicom_tool(name: str) -> str:
    """The path of a dicom3tools or dcmtk command; the test fails (it does not skip) when it is not installed."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH (apt-get install dicom3tools dcmtk)")
    return path


def dciodvfy_lines(path: Path) -> list[str]:
    """Every line ``dciodvfy`` prints for the DICOM file at ``path``, stripped."""
    verified = subprocess.run(
        [dicom_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    return [line.strip() for line in (verified.stdout + verified.stderr).splitlines()]


def sr_dciodvfy(ds: Dataset, path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings other than the private coding scheme and DICOMDIR ones) of dciodvfy on ``ds``, written
    to ``path``."""
    from radtrace.reporting.sr import sr_bytes

    path.write_bytes(sr_bytes(ds))
    lines = dciodvfy_lines(path)
    errors = [line for line in lines if "Error" in line]
    warnings = [
        line for line in lines if "Warning" in line and not line.startswith((PRIVATE_SCHEME_WARNING, DICOMDIR_WARNING))
    ]
    return errors, warnings


def as_part10(ds: Dataset, syntax: str | None = ExplicitVRLittleEndian) -> Dataset:
    """``ds`` made ready to save as a Part 10 file: File Meta (added when missing) naming ``syntax`` (None keeps
    the one it has, Implicit VR Little Endian when it has none) and the SOP class and instance, and without the
    legacy group lengths a changed data set would carry wrongly. Returns ``ds``, changed in place."""
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    if syntax is not None:
        ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for tag in [element.tag for element in ds if element.tag.element == 0]:
        del ds[tag]
    return ds


def one_line_of(stderr: str) -> str:
    """The single non-empty line a CLI error wrote: no traceback, no pynetdicom wording."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    assert "pynetdicom" not in stderr
    return lines[0]
