"""The listener's TLS files are judged at start (``serve``'s table, ``radtrace listen``'s log), naming the setting,
its variable and what to do: missing, unreadable, a key of another certificate, a key with a passphrase, a
certificate expired, not valid yet (this machine's clock behind), or ending soon.

Found by the first-hour walk: a missing certificate was "listener.tls: cannot load certificate, key or CA bundle:
[Errno 2] No such file or directory" (which file? which setting?), a key of another certificate "[X509:
KEY_VALUES_MISMATCH] key values mismatch (_ssl.c:3926)", and an expired certificate (or a clock set back) started
without a word while every PACS that checks it failed its TLS handshakes.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from certificate_support import certificate_pair as _pair
from radtrace.config import Settings, load_settings
from radtrace.preflight.tls import EXPIRY_WARNING, certificate_files_check, tls_check
from radtrace.testing.services import free_port
from tests_support import radtrace

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 5, 18, 0, tzinfo=UTC)


def _settings(folder: Path, certificate: Path, key: Path) -> Settings:
    return load_settings(data_dir=folder, listener={"tls": {"enabled": True, "certificate": certificate,
                                                            "private_key": key}})  # fmt: skip


def _judged(folder: Path, certificate: Path, key: Path) -> tuple[str, str, bool]:
    check = tls_check(_settings(folder, certificate, key), now=NOW)
    assert check is not None
    assert check.name == "TLS certificate"
    return check.status, check.detail, check.config_error


def test_each_tls_mistake_names_the_setting_and_what_to_do(tmp_path: Path) -> None:
    good_cert, good_key = _pair(tmp_path, "good", NOW - timedelta(days=30), NOW + timedelta(days=300))
    other_cert, other_key = _pair(tmp_path, "other", NOW - timedelta(days=30), NOW + timedelta(days=300))
    assert _judged(tmp_path, good_cert, good_key) == ("ok", f"{good_cert}, valid until 2027-10-01", False)

    status, detail, config_error = _judged(tmp_path, tmp_path / "missing.pem", good_key)
    assert (status, config_error) == ("failed", True)
    assert detail == (f"listener.tls.certificate (RADTRACE_LISTENER__TLS__CERTIFICATE) {tmp_path / 'missing.pem'} "
                      "does not exist: correct the path, or put the file there")  # fmt: skip

    status, detail, config_error = _judged(tmp_path, good_cert, other_key)
    assert (status, config_error) == ("failed", True)
    assert detail == (f"listener.tls.private_key (RADTRACE_LISTENER__TLS__PRIVATE_KEY) {other_key} is not the key of "
                      f"listener.tls.certificate (RADTRACE_LISTENER__TLS__CERTIFICATE) {good_cert}: give the key the "
                      "certificate was issued for")  # fmt: skip
    del other_cert

    locked_cert, locked_key = _pair(tmp_path, "locked", NOW - timedelta(days=1), NOW + timedelta(days=300), b"secret")
    status, detail, _ = _judged(tmp_path, locked_cert, locked_key)  # before: OpenSSL asked on the terminal
    assert status == "failed"
    assert "is encrypted with a passphrase" in detail
    assert "openssl pkey" in detail

    expired_cert, expired_key = _pair(tmp_path, "expired", NOW - timedelta(days=400), NOW - timedelta(days=2))
    status, detail, _ = _judged(tmp_path, expired_cert, expired_key)
    assert status == "warning"  # the plain port, and PACS that do not check it, still work
    assert detail.startswith(f"listener.tls.certificate (RADTRACE_LISTENER__TLS__CERTIFICATE) {expired_cert} expired "
                             "on 2026-12-03 18:00 UTC (this machine's clock says 2026-12-05 18:00 UTC)")  # fmt: skip
    assert "install a renewed certificate" in detail

    future_cert, future_key = _pair(tmp_path, "future", NOW + timedelta(hours=3), NOW + timedelta(days=300))
    status, detail, _ = _judged(tmp_path, future_cert, future_key)  # this machine's clock three hours behind
    assert status == "warning"
    assert "is not valid before 2026-12-05 21:00 UTC and this machine's clock says 2026-12-05 18:00 UTC" in detail
    assert "correct this machine's clock (timedatectl; NTP)" in detail

    ending_cert, ending_key = _pair(tmp_path, "ending", NOW - timedelta(days=80), NOW + timedelta(days=5, hours=1))
    status, detail, _ = _judged(tmp_path, ending_cert, ending_key)
    assert status == "warning"
    assert detail == (f"listener.tls.certificate (RADTRACE_LISTENER__TLS__CERTIFICATE) {ending_cert} expires on "
                      "2026-12-10 19:00 UTC, in 5 day(s): renew it before then")  # fmt: skip


def test_listen_refuses_a_key_of_another_certificate_in_one_log_line_with_exit_2(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    certificate, _ = _pair(tmp_path, "server", now - timedelta(days=1), now + timedelta(days=300))
    _, other_key = _pair(tmp_path, "other", now - timedelta(days=1), now + timedelta(days=300))
    env = {"RADTRACE_DATA_DIR": str(tmp_path / "var"), "RADTRACE_LISTENER__PORT": str(free_port()),
           "RADTRACE_LISTENER__TLS__ENABLED": "true", "RADTRACE_LISTENER__TLS__CERTIFICATE": str(certificate),
           "RADTRACE_LISTENER__TLS__PRIVATE_KEY": str(other_key)}  # fmt: skip
    result = radtrace("listen", env=env, timeout=90)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "KEY_VALUES_MISMATCH" not in result.stderr
    *logged, last = result.stderr.strip().splitlines()
    assert logged[-1].endswith(f"start-up check 'TLS certificate' failed: listener.tls.private_key "
                               f"(RADTRACE_LISTENER__TLS__PRIVATE_KEY) {other_key} is not the key of "
                               f"listener.tls.certificate (RADTRACE_LISTENER__TLS__CERTIFICATE) {certificate}: give "
                               "the key the certificate was issued for")  # fmt: skip
    assert last == "radtrace: listener not started: start-up checks failed (TLS certificate); see the log lines above"


@pytest.mark.parametrize(
    ("start", "end", "words"),
    [
        (NOW - timedelta(days=400), NOW, "expired on 2026-12-05 18:00 UTC"),
        (NOW - timedelta(days=30), NOW + EXPIRY_WARNING, "expires on 2026-12-19 18:00 UTC, in 14 day(s)"),
        (NOW - timedelta(days=30), NOW + EXPIRY_WARNING + timedelta(minutes=1), None),
        (NOW + timedelta(minutes=1), NOW + timedelta(days=300), "is not valid before 2026-12-05 18:01 UTC"),
        (NOW, NOW + timedelta(days=300), None),
    ],
    ids=["ends-now", "ends-at-the-warning", "ends-after-it", "starts-in-a-minute", "starts-now"],
)
def test_a_certificate_s_dates_are_judged_alike_as_the_listener_s_own_and_in_its_ca_bundle(
    tmp_path: Path, start: datetime, end: datetime, words: str | None
) -> None:
    """One reading of a certificate's dates at their edges: the same certificate as ``listener.tls.certificate`` and
    as the one CA of ``listener.tls.ca_bundle`` is out of date (or ending soon) in the same words, or in neither."""
    certificate, key = _pair(tmp_path, "edge", start, end)
    own = certificate_files_check("TLS certificate", "listener.tls.", certificate, key, None, server=True,
                                  refused_by="a PACS refuses it", now=NOW)  # fmt: skip
    bundle = certificate_files_check("TLS certificate", "listener.tls.", None, None, certificate, server=True,
                                     refused_by="a PACS refuses it", now=NOW)  # fmt: skip
    if words is None:
        assert (own.status, bundle.status) == ("ok", "ok"), (own, bundle)
        return
    assert (own.status, bundle.status) == ("warning", "warning")
    assert f"(RADTRACE_LISTENER__TLS__CERTIFICATE) {certificate} {words}" in own.detail
    assert f"'CN=radtrace.example' {words}" in bundle.detail
