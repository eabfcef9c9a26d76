"""The listener's TLS files (``listener.tls``): there, readable, the key the certificate's, the certificate in date.

Before, the listener found a missing file or a key of another certificate itself, in words that named neither the
file nor the setting ("cannot load certificate, key or CA bundle: [Errno 2] No such file or directory"); a key
encrypted with a passphrase made OpenSSL ask for it on the terminal (a systemd unit has none); and a certificate
that had expired, or that this machine's clock (set back) found not yet valid, started without a word: every PACS
that checks the certificate then failed its TLS handshakes.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from radtrace.config import Settings
from radtrace.preflight.check import Check

__all__ = ["EXPIRY_WARNING", "tls_check"]

#: A certificate that ends within this is said at each start, with the day it ends.
EXPIRY_WARNING = timedelta(days=14)


def _setting(name: str) -> str:
    return f"listener.tls.{name} (RADTRACE_LISTENER__TLS__{name.upper()})"


def _no_passphrase() -> str:
    raise _EncryptedKeyError


class _EncryptedKeyError(Exception):
    """The private key needs a passphrase: nobody is there to type it."""


def tls_check(settings: Settings, now: datetime | None = None) -> Check | None:
    """The ``TLS certificate`` check (None: ``listener.tls.enabled`` is off). Missing, unreadable or mismatched files
    fail (exit 2: the settings or files must change); a certificate out of date is a warning (the plain port, and
    PACS that do not check it, still work), naming its dates and this machine's clock."""
    tls = settings.listener.tls
    if not tls.enabled or tls.certificate is None or tls.private_key is None:
        return None
    files = (("certificate", tls.certificate), ("private_key", tls.private_key), ("ca_bundle", tls.ca_bundle))
    for name, path in files:
        if path is not None and (problem := _file_problem(path)) is not None:
            return Check("TLS certificate", "failed", f"{_setting(name)} {path} {problem}", config_error=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls.certificate, tls.private_key, password=_no_passphrase)
    except _EncryptedKeyError:
        return Check("TLS certificate", "failed", f"{_setting('private_key')} {tls.private_key} is encrypted with a "
                     "passphrase, which a service cannot be asked for: give it the key without one (openssl pkey -in "
                     "KEY -out PLAIN.key; keep it readable by the service's user only)", config_error=True)  # fmt: skip
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            detail = (f"{_setting('private_key')} {tls.private_key} is not the key of {_setting('certificate')} "
                      f"{tls.certificate}: give the key the certificate was issued for")  # fmt: skip
        else:
            detail = (f"{_setting('certificate')} {tls.certificate} and {_setting('private_key')} {tls.private_key} "
                      f"are not a PEM certificate and its key ({exc.reason or exc})")  # fmt: skip
        return Check("TLS certificate", "failed", detail, config_error=True)
    if tls.ca_bundle is not None:
        try:
            context.load_verify_locations(tls.ca_bundle)
        except ssl.SSLError as exc:
            return Check("TLS certificate", "failed", f"{_setting('ca_bundle')} {tls.ca_bundle} holds no PEM CA "
                         f"certificate ({exc.reason or exc})", config_error=True)  # fmt: skip
    return _dates(tls.certificate, now or datetime.now(UTC))


def _file_problem(path: Path) -> str | None:
    try:
        path.read_bytes()
    except FileNotFoundError:
        return "does not exist: correct the path, or put the file there"
    except IsADirectoryError:
        return "is a directory: name the file"
    except PermissionError:
        return "cannot be read by this user: make it readable by the user radtrace runs as (chgrp radtrace; chmod 0640)"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    return None


def _dates(certificate: Path, now: datetime) -> Check:
    from cryptography import x509

    try:
        issued = x509.load_pem_x509_certificate(certificate.read_bytes())
    except (ValueError, OSError) as exc:  # OpenSSL read it: a form cryptography does not; say nothing of dates
        return Check("TLS certificate", "ok", f"{certificate} (its dates not read: {exc})")
    start, end = issued.not_valid_before_utc, issued.not_valid_after_utc
    named, clock = f"{_setting('certificate')} {certificate}", f"this machine's clock says {now:%Y-%m-%d %H:%M} UTC"
    if end <= now:
        detail = (
            f"{named} expired on {end:%Y-%m-%d %H:%M} UTC ({clock}): a PACS that checks it refuses TLS "
            "associations; install a renewed certificate, or correct the clock if it is wrong (timedatectl)"
        )
    elif start > now:
        detail = (
            f"{named} is not valid before {start:%Y-%m-%d %H:%M} UTC and {clock}: correct this machine's clock "
            "(timedatectl; NTP) or use a certificate valid now; until then a PACS that checks it refuses TLS "
            "associations"
        )
    elif end - now <= EXPIRY_WARNING:
        detail = f"{named} expires on {end:%Y-%m-%d %H:%M} UTC, in {(end - now).days} day(s): renew it before then"
    else:
        detail = ""
    if detail:
        return Check("TLS certificate", "warning", detail)
    return Check("TLS certificate", "ok", f"{certificate}, valid until {end:%Y-%m-%d}")
