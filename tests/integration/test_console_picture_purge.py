"""A study purged from the spool leaves the console's picture cache: it is neither served nor held in memory.

The console keeps the study page's PNGs in memory (:class:`radtrace.console.images.PictureCache`). The site's
retention job deletes ``spool/<study>`` from another process, which tells no console anything. Before: each
request hashed the spooled files, so a purged study was refused (404), but its pixels stayed in every console
process that had shown them until other pictures pushed them out, 64 MiB later: held for days on a quiet night.
Now each console process drops them within ``CHECK_EVERY_S`` of the purge, asked for again or not, and the size of
the cache is the setting ``console.picture_cache_bytes``.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from console_support import (
    PASSWORD,
    add_user,
    console_client,
    console_settings,
    csrf_of,
    reported_study,
    sign_in,
    study_path,
)
from radtrace.audit.api import create_api
from radtrace.config import Settings, load_settings
from radtrace.console.images import PICTURE_CACHE_BYTES, PictureCache
from radtrace.console.pages import ConsoleState
from radtrace.console.web import mount_console
from radtrace.errors import ConfigError
from radtrace.model.reader import StudyReader
from radtrace.reporting.draft_store import drafts_root
from radtrace.store.engine import Store
from radtrace.store.models import Instance, Study

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def _console(store: Store, settings: Settings) -> Iterator[tuple[httpx.Client, ConsoleState]]:
    """A console (the QA API with the console mounted, as ``radtrace api`` serves it) on uvicorn on a free port,
    with a signed-in radiologist's HTTP client, and its state (to look into its memory)."""
    import uvicorn

    from radtrace.testing.services import free_port

    app = create_api(store, drafts_dir=drafts_root(settings))
    mount_console(app, store, settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, name="console-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive(), "the console did not start"
        assert time.monotonic() < deadline, "the console did not start within 10 s"
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            form = client.get("/console/login")
            signed = client.post("/console/login", data={"username": "dr.purge", "password": PASSWORD,
                                                         "csrf_token": csrf_of(form.text)})  # fmt: skip
            assert signed.status_code == 303, signed.text
            yield client, app.state.console
    finally:
        app.state.console.pictures.close()
        server.should_exit = True
        thread.join(timeout=10)


def _spool_dir(store: Store, settings: Settings, study_uid: str) -> Path:
    with store.session() as session:
        paths = session.scalars(sa.select(Instance.path).join(Study).where(Study.study_uid == study_uid)).all()
    [folder] = {(settings.spool_dir / path).parent for path in paths}
    return folder


def test_a_purged_study_is_not_served_nor_held_by_any_console_process(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(PictureCache, "check_every_s", 0.1)
    store = sqlite_store
    settings = console_settings(tmp_path, store)
    reader = StudyReader(settings.model, data_dir=settings.data_dir)
    purged, kept = (reported_study(settings, store, reader, seed=seed) for seed in (71, 72))
    add_user(store, "dr.purge", "radiologist")
    images = {uid: f"{study_path(store, uid)}/images/0" for uid in (purged, kept)}
    with _console(store, settings) as (first, one), _console(store, settings) as (second, other):
        shown: dict[str, bytes] = {}
        for client in (first, second):
            for uid, image in images.items():
                for kind in ("prepared", "original"):
                    answer = client.get(f"{image}/{kind}.png")
                    assert answer.status_code == 200, answer.text
                    shown[f"{uid}/{kind}"] = answer.content
        for state in (one, other):
            assert state.pictures.studies() == {purged, kept}
        held = one.pictures.size_bytes
        assert held > 0

        # the retention job, in a process of its own, deletes the study's spool; no console is told
        shutil.rmtree(_spool_dir(store, settings, purged))
        deadline = time.monotonic() + 10
        while any(purged in state.pictures.studies() for state in (one, other)) and time.monotonic() < deadline:
            time.sleep(0.05)
        for state in (one, other):
            assert purged not in state.pictures.studies(), "a purged study's pixels are still held"
            assert state.pictures.studies() == {kept}
        assert 0 < one.pictures.size_bytes < held

        for client in (first, second):
            for kind in ("prepared", "original"):
                gone = client.get(f"{images[purged]}/{kind}.png")
                assert gone.status_code in (404, 410), gone.status_code
                assert gone.headers["content-type"] != "image/png"
                still = client.get(f"{images[kept]}/{kind}.png")  # the other study is still shown, as it was
                assert still.status_code == 200
                assert still.content == shown[f"{kept}/{kind}"]
        for state in (one, other):
            assert state.pictures.studies() == {kept}


def test_a_request_that_finds_a_study_purged_drops_its_pictures_at_once(
    sqlite_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No checker thread at all (None): the request that finds the spool gone drops the study's pictures itself."""
    monkeypatch.setattr(PictureCache, "check_every_s", None)
    store = sqlite_store
    settings = console_settings(tmp_path, store)
    study_uid = reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=73)
    add_user(store, "dr.purge", "radiologist")
    with _console(store, settings) as (client, state):
        image = f"{study_path(store, study_uid)}/images/0"
        assert client.get(f"{image}/prepared.png").status_code == 200
        assert client.get(f"{image}/original.png").status_code == 200
        assert state.pictures.studies() == {study_uid}
        shutil.rmtree(_spool_dir(store, settings, study_uid))
        assert client.get(f"{image}/prepared.png").status_code == 404
        assert state.pictures.studies() == set()
        assert state.pictures.size_bytes == 0


def test_the_picture_cache_size_is_a_bounded_setting(sqlite_store: Store, tmp_path: Path) -> None:
    assert load_settings(data_dir=tmp_path).console.picture_cache_bytes == PICTURE_CACHE_BYTES == 64 * 1024**2
    for wrong in (-1, 5 * 1024**3):
        with pytest.raises(ConfigError, match=r"console\.picture_cache_bytes"):
            load_settings(data_dir=tmp_path, console={"picture_cache_bytes": wrong})
    store = sqlite_store
    settings = console_settings(tmp_path, store, picture_cache_bytes=0)  # none kept: made on every request
    study_uid = reported_study(settings, store, StudyReader(settings.model, data_dir=settings.data_dir), seed=74)
    add_user(store, "dr.purge", "radiologist")
    with console_client(store, settings) as client:
        sign_in(client, "dr.purge")
        state = client.app.state.console  # type: ignore[attr-defined]
        assert state.pictures.max_bytes == 0
        assert client.get(f"{study_path(store, study_uid)}/images/0/prepared.png").status_code == 200
        assert state.pictures.size_bytes == 0
