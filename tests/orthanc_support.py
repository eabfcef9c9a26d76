"""A real Orthanc (the Debian package) for tests: started on free ports, storage in a temporary folder.

Optionally it plays the routing PACS: with ``forward_to_port`` its built-in Lua scripting
(:data:`AUTO_FORWARD_LUA`) sends each study, once it is stable, to radtrace's listener by C-STORE,
every instance once and never the SRs (radtrace's own SR coming back must not loop). Starting it
again on the same ``directory`` and ports keeps what it stored: stopping and restarting it is "the
PACS was down for a while".
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
from pydicom.dataset import FileDataset
from pydicom.uid import BasicTextSRStorage

from radtrace.testing.services import free_port

ORTHANC = "/usr/sbin/Orthanc"

#: Orthanc Lua: on a stable study, C-STORE its non-SR instances not yet forwarded to the modality "radtrace"
#: (synchronously: the C-STOREs are answered when the POST returns). Each run ends with a line in Orthanc's log,
#: :data:`STABLE_STUDY_LINE`, which tells a test that the study was judged with its SRs in it.
AUTO_FORWARD_LUA = """
forwarded = {}

function OnStableStudy(studyId, tags, metadata)
  local pending = {}
  local reports = 0
  for _, series in ipairs(ParseJson(RestApiGet('/studies/' .. studyId .. '/series'))) do
    if series['MainDicomTags']['Modality'] ~= 'SR' then
      for _, instance in ipairs(series['Instances']) do
        if forwarded[instance] == nil then
          table.insert(pending, instance)
        end
      end
    else
      reports = reports + #series['Instances']
    end
  end
  if #pending > 0 then
    RestApiPost('/modalities/radtrace/store', DumpJson(pending, true))
    for _, instance in ipairs(pending) do
      forwarded[instance] = true
    end
    print('forwarded ' .. #pending .. ' instances of study ' .. studyId .. ' to radtrace')
  end
  print('stable study ' .. studyId .. ' with ' .. reports .. ' SR instance(s): ' .. #pending .. ' forwarded')
end
"""
#: How the line :data:`AUTO_FORWARD_LUA` logs at the end of each run begins (format with study and reports).
STABLE_STUDY_LINE = "Lua says: stable study {study} with {reports} SR instance(s): "


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

    def study_instances(self, study_uid: str, modality: str | None = None) -> list[str]:
        """Orthanc IDs of the study's instances (of one modality, e.g. ``SR``), in no particular order."""
        query = {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}}
        response = httpx.post(f"{self.url}/tools/find", json=query, timeout=10)
        response.raise_for_status()
        found: list[str] = []
        for study_id in response.json():
            series_list = self.get(f"/studies/{study_id}/series")
            assert isinstance(series_list, list)
            for series in series_list:
                if modality is None or series["MainDicomTags"].get("Modality") == modality:
                    found.extend(series["Instances"])
        return found

    def dataset(self, instance_id: str) -> FileDataset:
        """The stored instance's Part 10 file, read with pydicom."""
        response = httpx.get(f"{self.url}/instances/{instance_id}/file", timeout=30)
        response.raise_for_status()
        return pydicom.dcmread(io.BytesIO(response.content))

    def srs(self, study_uid: str) -> list[FileDataset]:
        """Every SR draft (not the companion Basic Text SRs) Orthanc holds in the study."""
        held = [self.dataset(instance_id) for instance_id in self.study_instances(study_uid, "SR")]
        return [ds for ds in held if ds.SOPClassUID != BasicTextSRStorage]

    def companions(self, study_uid: str) -> list[FileDataset]:
        """Every companion document (Basic Text SR) Orthanc holds in the study."""
        held = [self.dataset(instance_id) for instance_id in self.study_instances(study_uid, "SR")]
        return [ds for ds in held if ds.SOPClassUID == BasicTextSRStorage]


@contextmanager
def running_orthanc(
    directory: Path,
    calling_ae_title: str = "RADTRACE",
    *,
    forward_to_port: int | None = None,
    dicom_port: int | None = None,
    http_port: int | None = None,
) -> Iterator[Orthanc]:
    """Start Orthanc with a JSON configuration under ``directory``; stop it afterwards.

    ``calling_ae_title`` is radtrace's AE title (the modality "radtrace"); with ``forward_to_port`` Orthanc
    auto-forwards stable studies to that port (:data:`AUTO_FORWARD_LUA`). Give the ports of an earlier run
    to restart the same PACS.
    """
    if shutil.which(ORTHANC) is None:
        raise RuntimeError(f"{ORTHANC} not found: apt-get install orthanc")
    directory.mkdir(parents=True, exist_ok=True)
    orthanc = Orthanc("ORTHANC", dicom_port or free_port(), http_port or free_port())
    config: dict[str, object] = {
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
        "DicomModalities": {"radtrace": [calling_ae_title, "127.0.0.1", forward_to_port or free_port()]},
        "Plugins": [],
        "StableAge": 1,
    }
    if forward_to_port is not None:
        script = directory / "auto-forward.lua"
        script.write_text(AUTO_FORWARD_LUA)
        config["LuaScripts"] = [str(script)]
    path = directory / "orthanc.json"
    path.write_text(json.dumps(config))
    log = (directory / "orthanc.log").open("ab")
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
