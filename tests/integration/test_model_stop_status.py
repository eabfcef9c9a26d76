"""``radtrace status`` on a stop for unparseable model output (:mod:`radtrace.worker.output_guard`): the command it
gives to lift it can be pasted as printed, in the text and in ``--json`` alike.

``--json``'s ``model_stops[].again`` said ``radtrace model resume`` without the global options (``--config`` ...) the
text's ``again:`` line carries (0734eac gave them to the failed, skipped and held entries only): pasted on a site
whose settings are in a config file, it lifted nothing (another data directory: "nothing to lift").
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from radtrace.audit.events import Actor
from radtrace.audit.recorder import AuditRecorder
from radtrace.config import load_settings
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.store.migrate import upgrade
from radtrace.worker.breaker import ModelServerBreaker
from radtrace.worker.outage import OutageNotice
from radtrace.worker.output_guard import STOPPED_MARK
from tests_support import radtrace

pytestmark = pytest.mark.integration

SERVER = "http://gpu-7.example:8000"
STOP = f"{STOPPED_MARK} 4 consecutive studies (model m r1 via vllm): check the weights and the chat template"


@dataclass
class Site:
    data_dir: Path
    config: Path
    store: Store

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return radtrace("--config", str(self.config), *args, env={"COLUMNS": "400"})


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = tmp_path / "site settings.toml"  # a space: the printed command must quote it
    config.write_text(f'data_dir = "{data_dir}"\n', encoding="utf-8")
    store = Store.from_url(load_settings(data_dir=data_dir).store_url)
    upgrade(store)
    yield Site(data_dir, config, store)
    store.dispose()


def stop_reading(store: Store, server: str = SERVER) -> None:
    """A worker's stop, told as a worker tells it: its breaker opens on the guard's reason."""
    actor = Actor(process="radtrace-worker@w1")
    notice = OutageNotice(store, AuditRecorder(store, actor), actor, "w1", object(), utc_now, server=server)
    breaker = ModelServerBreaker(lambda: STOP, on_open=notice.opened)
    assert breaker.server_down()


def test_status_json_gives_the_resume_command_with_the_global_options_and_it_runs_as_pasted(site: Site) -> None:
    stop_reading(site.store)

    shown = site.run("status", "--no-broker")
    assert shown.returncode == 0, shown.stderr
    [again] = [line.strip() for line in shown.stdout.splitlines() if line.strip().startswith("again:")]
    command = f"radtrace --config {shlex.quote(str(site.config))} model resume"
    assert again.startswith(f"again: {command} (after checking"), again
    data = json.loads(site.run("status", "--no-broker", "--json").stdout)
    [stop] = data["model_stops"]
    assert (stop["server"], stop["reason"], stop["again"]) == (SERVER, STOP, command)

    environment = {k: v for k, v in os.environ.items() if not k.startswith("RADTRACE_")}
    pasted = subprocess.run(  # noqa: S602  # as a shell reads it (radtrace: this interpreter's module)
        stop["again"].replace("radtrace", f"{shlex.quote(sys.executable)} -m radtrace", 1), shell=True,
        capture_output=True, text=True, env=environment | {"COLUMNS": "400"}, cwd=site.data_dir.parent.parent,
        check=False, timeout=120,
    )  # fmt: skip
    assert pasted.returncode == 0, pasted.stderr
    assert pasted.stdout.startswith(f"stop lifted on {SERVER} "), pasted.stdout
    assert json.loads(site.run("status", "--no-broker", "--json").stdout)["model_stops"] == []


def test_with_two_servers_stopped_each_command_names_its_server(site: Site) -> None:
    other = "http://gpu-8.example:8000"
    stop_reading(site.store)
    stop_reading(site.store, other)

    data = json.loads(site.run("status", "--no-broker", "--json").stdout)

    program = f"radtrace --config {shlex.quote(str(site.config))}"
    assert [stop["again"] for stop in data["model_stops"]] == [
        f"{program} model resume --server {SERVER}",
        f"{program} model resume --server {other}",
    ]


def test_status_and_resume_count_the_site_s_unparsed_stop_after_not_the_default(site: Site) -> None:
    """A site that stops after 3 (``model.unparsed_stop_after``) was told by status and by the resume's line that
    reading stops again "after 4 more": the module's default, not its setting."""
    site.config.write_text(site.config.read_text(encoding="utf-8") + "[model]\nunparsed_stop_after = 3\n",
                           encoding="utf-8")  # fmt: skip
    stop_reading(site.store)

    shown = site.run("status", "--no-broker")
    assert "it stops again after 3 more unparseable studies in a row)" in shown.stdout, shown.stdout
    done = site.run("model", "resume")
    assert done.returncode == 0, done.stderr
    assert "it stops again after 3 more unparseable studies in a row" in done.stdout, done.stdout
