"""A real Orthanc (the Debian package) for tests: started on free ports, storage in a temporary folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from radtrace.testing.services import free_port

ORTHANC = "/usr/sbin/Orthanc"


@dataclass(frozen=True)
class Orthanc:
    """A running Orthanc: its DICOM AE and its REST API."""

    ae_title: str
    dicom_port: int
    http_port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def find_instance(self, sop_instance_uid: str) -> list[str]:
        """Orthanc IDs of the instances with this SOP Instance UID."""
        query = {"Level": "Instance", "Query": {"SOPInstanceUID": sop_instance_uid}}
        response = httpx.post(f"{self.url}/tools/find", json=query, timeout=10)
        response.raise_for_status()
        found: list[str] = response.json()
        return found

    def get(self, path: str) -> object:
        response = httpx.get(f"{self.url}{path}", timeout=10)
        response.raise_for_status()
        return response.json()


@contextmanager
def running_orthanc(directory: Path, calling_ae_title: str = "RADTRACE") -> Iterator[Orthanc]:
    """Start Orthanc with a JSON configuration under ``directory``; stop it afterwards."""
    if shutil.which(ORTHANC) is None:
        raise RuntimeError(f"{ORTHANC} not found: apt-get install orthanc")
    orthanc = Orthanc("ORTHANC", free_port(), free_port())
    config = {
        "Name": "radtrace-test",
        "StorageDirectory": str(directory / "storage"),
        "IndexDirectory": str(directory / "index"),
        "HttpPort": orthanc.http_port,
        "DicomPort": orthanc.dicom_port,
        "DicomAet": orthanc.ae_title,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "HttpServerEnabled": True,
        "DicomServerEnabled": True,
        "DicomAlwaysAllowStore": True,
        "DicomCheckCalledAet": True,
        "DicomModalities": {"radtrace": [calling_ae_title, "127.0.0.1", free_port()]},
        "Plugins": [],
        "StableAge": 1,
    }
    path = directory / "orthanc.json"
    path.write_text(json.dumps(config))
    log = (directory / "orthanc.log").open("wb")
    process = subprocess.Popen([ORTHANC, str(path)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{orthanc.url}/system", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not start: see {directory / 'orthanc.log'}")
            time.sleep(0.1)
        yield orthanc
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()
