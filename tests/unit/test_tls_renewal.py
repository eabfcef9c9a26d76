"""A TLS context that follows its files on disk looks at their status at each use, and reads them only when needed.

Before, :class:`~radtrace.tls_renewal.RenewedContext` (then in the RIS sender) read and hashed its three files at
every ORU: 33 us a call for a CA, certificate and key of a few kB, 179 us with a 215 kB CA bundle (timeit, this
machine), and at every association once the listener uses it. Now the files' status (``os.stat``) is compared, and
their content (still the truth) is read when a status changed, while a file is fresh enough that a rewrite within the
same clock tick would not show, and at least every :data:`~radtrace.tls_renewal.CHECK_EVERY_S`.
"""

from __future__ import annotations

import os
import shutil
import ssl
import time
from pathlib import Path

import pytest

from radtrace.reporting.dispatch.senders import RenewedContext  # where it was, and still is importable from
from radtrace.testing.atna import Pki, make_pki
from radtrace.tls_keys import tls_context

pytestmark = pytest.mark.unit

HOUR_NS = 3_600_000_000_000


@pytest.fixture(scope="module")
def old(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("old-pki"))


@pytest.fixture(scope="module")
def new(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("new-pki"))


def _install(folder: Path, pki: Pki) -> tuple[Path, Path, Path]:
    """The CA bundle, client certificate and key under ``folder``, as installed an hour ago."""
    folder.mkdir(parents=True, exist_ok=True)
    files = (folder / "ca.pem", folder / "client.pem", folder / "client.key")
    for target, source in zip(files, (pki.ca, pki.client_cert, pki.client_key), strict=True):
        shutil.copyfile(source, target)
        _age(target)
    return files


def _age(path: Path) -> None:
    past = time.time_ns() - HOUR_NS
    os.utime(path, ns=(past, past))


def _reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every path ``Path.read_bytes`` reads from now on."""
    reads: list[Path] = []
    read_bytes = Path.read_bytes

    def counted(path: Path) -> bytes:
        reads.append(path)
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", counted)
    return reads


def _rewrite_unseen(files: tuple[Path, ...], new: Pki, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rewrite ``files`` (CA, certificate, key) with ``new``'s, their status frozen as it was before: a rewrite the
    file system's status does not show."""
    import radtrace.tls_renewal as tls_renewal

    frozen = tuple(tls_renewal._status(path) for path in files)
    monkeypatch.setattr(tls_renewal, "_status", lambda path: frozen[files.index(path)])
    for target, source in zip(files, (new.ca, new.client_cert, new.client_key), strict=True):
        target.write_bytes(source.read_bytes())


def _context(files: tuple[Path, ...]) -> tuple[RenewedContext, list[int]]:
    """A RenewedContext over ``files`` (CA bundle, certificate, key) and the count of its builds."""
    builds: list[int] = []

    def build() -> ssl.SSLContext:
        builds.append(1)
        return tls_context(*files, setting="dispatch.ris.")

    return RenewedContext(build, files, "dispatch.ris"), builds


def _ca_serials(context: ssl.SSLContext | None) -> list[str]:
    assert context is not None
    return [str(cert["serialNumber"]) for cert in context.get_ca_certs()]


def test_files_unchanged_are_not_read_at_each_use_and_a_swapped_certbot_link_is_seen_at_the_next(
    tmp_path: Path, old: Pki, new: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """certbot's layout: ``live/`` holds links into ``archive/``, swapped to the renewed files."""
    archive, live = tmp_path / "archive", tmp_path / "live"
    first = _install(archive / "1", old)
    second = _install(archive / "2", new)
    live.mkdir()
    links = tuple(live / path.name for path in first)
    for link, target in zip(links, first, strict=True):
        link.symlink_to(target)
    renewed, builds = _context(links)
    before = renewed.get()
    reads = _reads(monkeypatch)
    for _ in range(200):
        assert renewed.get() is before
    assert reads == []  # before: 600 reads, three files at each use
    for link, target in zip(links, second, strict=True):  # the renewal: each link replaced by rename, as certbot does
        staged = link.with_name(f".{link.name}.new")
        staged.symlink_to(target)
        os.replace(staged, link)
    after = renewed.get()
    assert after is not before
    assert sorted(reads) == sorted(links)
    assert len(builds) == 2
    assert _ca_serials(after) != _ca_serials(before)


def test_a_rewrite_whose_status_does_not_show_is_found_within_check_every_s(
    tmp_path: Path, old: Pki, new: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system whose status shows nothing of a rewrite (times not kept, or a rewrite within one clock tick of
    an old file whose size stayed): the content is read again once :data:`CHECK_EVERY_S` has passed."""
    import radtrace.tls_renewal as tls_renewal

    clock = [1000.0]
    monkeypatch.setattr(tls_renewal, "_monotonic", lambda: clock[0])
    files = _install(tmp_path / "tls", old)
    renewed, builds = _context(files)
    before = renewed.get()
    _rewrite_unseen(files, new, monkeypatch)
    clock[0] += tls_renewal.CHECK_EVERY_S - 1
    assert renewed.get() is before
    clock[0] += 1
    after = renewed.get()
    assert after is not before
    assert len(builds) == 2
    assert _ca_serials(after) != _ca_serials(before)


def test_a_file_modified_within_racy_s_is_read_at_each_use_until_it_is_older(
    tmp_path: Path, old: Pki, new: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files just written: a rewrite within the same clock tick keeps their time and size, so their content is read
    at each use while they are that fresh, and a rewrite is found at the next use even with the status unchanged."""
    import radtrace.tls_renewal as tls_renewal

    files = _install(tmp_path / "tls", old)
    now = time.time_ns()
    for path in files:
        os.utime(path, ns=(now, now))
    renewed, builds = _context(files)
    before = renewed.get()
    _rewrite_unseen(files, new, monkeypatch)
    after = renewed.get()
    assert after is not before
    assert len(builds) == 2
    # older than RACY_S (the wall clock moved on): the status is trusted again, nothing read
    monkeypatch.setattr(tls_renewal, "_wall_ns", lambda: now + int(tls_renewal.RACY_S * 1e9) + 1)
    renewed.get()  # read once more: the look before found the files fresh
    reads = _reads(monkeypatch)
    for _ in range(50):
        assert renewed.get() is after
    assert reads == []
