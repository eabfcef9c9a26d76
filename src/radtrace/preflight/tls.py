"""TLS files judged at start, with one function for each side that has them: the listener's own certificate
(``listener.tls``), the ATNA forwarder's client certificate and CA bundle (``atna.*`` with ``transport = "tls"``)
and each TLS PACS's CA bundle and client certificate (``dispatch.pacs[i].*``; without ``ca_bundle``, the CA store
the dispatcher checks it against).

Before, the listener found a missing file or a key of another certificate itself, in words that named neither the
file nor the setting ("cannot load certificate, key or CA bundle: [Errno 2] No such file or directory"); a key
encrypted with a passphrase made OpenSSL ask for it on the terminal (a systemd unit has none); and a certificate
that had expired, or that this machine's clock (set back) found not yet valid, started without a word: every PACS
that checks the certificate then failed its TLS handshakes. The outbound side was found only at the first delivery,
at night: the ATNA forwarder started with a missing CA bundle or client key and logged a reconnect error every
minute; a passphrase key made it ask on the terminal; an expired client certificate started without a word; an
``SSL_CERT_FILE`` naming a missing file left every TLS PACS failing its handshake on "certificate verify failed".
"""

from __future__ import annotations

import enum
import os
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from radtrace.config import Settings, environment_variable
from radtrace.preflight.check import Check
from radtrace.tls_keys import PassphraseNeededError, no_passphrase
from radtrace.tls_renewal import EXPIRY_WARNING

if TYPE_CHECKING:
    from cryptography import x509

__all__ = [
    "EXPIRY_WARNING",
    "atna_tls_check",
    "certificate_files_check",
    "pacs_tls_check",
    "ris_tls_check",
    "tls_check",
]

# EXPIRY_WARNING: a certificate that ends within it is said at each start, with the day it ends; the same threshold
# says it once a day while a service runs (radtrace.tls_renewal, where it is defined, for both).


def _named(prefix: str, field: str) -> str:
    """``listener.tls.`` and ``certificate`` -> ``listener.tls.certificate (RADTRACE_LISTENER__TLS__CERTIFICATE)``:
    the setting and the variable that holds it (``dispatch.ris.*`` are in the JSON of ``RADTRACE_DISPATCH__RIS``)."""
    parts = [part.split("[")[0] for part in (*prefix.rstrip(".").split("."), field)]  # dispatch.pacs[0]: in a list
    variable = environment_variable(parts)
    held = variable == "RADTRACE_" + "__".join(parts).upper()
    return f"{prefix}{field} ({variable if held else f'in {variable}'})"


def tls_check(settings: Settings, now: datetime | None = None) -> Check | None:
    """The listener's ``TLS certificate`` check (None: ``listener.tls.enabled`` is off). A certificate out of date
    is a warning (the plain port, and PACS that do not check it, still work)."""
    tls = settings.listener.tls
    if not tls.enabled or tls.certificate is None or tls.private_key is None:
        return None
    return certificate_files_check(
        "TLS certificate", "listener.tls.", tls.certificate, tls.private_key, tls.ca_bundle,
        server=True, refused_by="a PACS that checks it refuses TLS associations", now=now,
    )  # fmt: skip


def atna_tls_check(settings: Settings, now: datetime | None = None) -> Check | None:
    """The ATNA forwarder's ``ATNA TLS`` check (None: forwarding off, not over TLS, or no file to judge)."""
    atna = settings.atna
    if not atna.enabled or atna.transport != "tls":
        return None
    if atna.certificate is None and atna.ca_bundle is None:
        return None  # this machine's CA store and no client certificate: nothing of ours to read
    return certificate_files_check(
        "ATNA TLS", "atna.", atna.certificate, atna.private_key, atna.ca_bundle, server=False,
        refused_by="an audit record repository that asks for it refuses the connection (the audit trail waits)",
        now=now,
    )  # fmt: skip


def ris_tls_check(settings: Settings, now: datetime | None = None) -> Check | None:
    """The ``RIS TLS`` check of ``dispatch.ris`` over TLS (None: no RIS, or not over TLS): its CA bundle and client
    certificate; without ``ca_bundle``, this machine's CA store the RIS certificate is then checked against."""
    ris = settings.dispatch.ris
    if ris is None or not ris.tls:
        return None
    store = None
    if ris.ca_bundle is None:
        store = _ca_store_check("RIS TLS", "the RIS", "dispatch.ris.tls (no dispatch.ris.ca_bundle)")
        if ris.certificate is None or store.status == "failed":
            return store
    files = certificate_files_check(
        "RIS TLS", "dispatch.ris.", ris.certificate, ris.private_key, ris.ca_bundle, server=False,
        refused_by="a RIS that asks for it refuses the connection (HL7 results wait in the outbox)", now=now,
    )  # fmt: skip
    return store if store is not None and files.status == "ok" and store.status != "ok" else files


def certificate_files_check(
    name: str,
    prefix: str,
    certificate: Path | None,
    private_key: Path | None,
    ca_bundle: Path | None,
    *,
    server: bool,
    refused_by: str,
    now: datetime | None = None,
) -> Check:
    """Check ``name``: the files of the settings ``<prefix>certificate``, ``private_key`` and ``ca_bundle`` (each
    may be unset). Missing, unreadable, a directory, a key of another certificate, a key with a passphrase, a CA
    bundle with no PEM certificate: failed (exit 2, the settings or files must change). The certificate expired, not
    valid yet by this machine's clock, or ending within :data:`EXPIRY_WARNING`: a warning with its dates, where
    ``refused_by`` says who then refuses. The CA bundle's certificates the same (:func:`_bundle_dates`): a warning
    naming each one out of date, and failed when a client's bundle holds none that has not expired."""

    def named(field: str) -> str:
        return _named(prefix, field)

    for field, path in (("certificate", certificate), ("private_key", private_key), ("ca_bundle", ca_bundle)):
        if path is not None and (problem := _file_problem(path)) is not None:
            return Check(name, "failed", f"{named(field)} {path} {problem}", config_error=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    if certificate is not None and private_key is not None:
        try:
            context.load_cert_chain(certificate, private_key, password=no_passphrase)
        except PassphraseNeededError:
            return Check(name, "failed", f"{named('private_key')} {private_key} is encrypted with a passphrase, "
                         "which a service cannot be asked for: give it the key without one (openssl pkey -in KEY -out "
                         "PLAIN.key; keep it readable by the service's user only)", config_error=True)  # fmt: skip
        except ssl.SSLError as exc:
            if exc.reason == "KEY_VALUES_MISMATCH":
                detail = (f"{named('private_key')} {private_key} is not the key of {named('certificate')} "
                          f"{certificate}: give the key the certificate was issued for")  # fmt: skip
            else:
                detail = (f"{named('certificate')} {certificate} and {named('private_key')} {private_key} are not a "
                          f"PEM certificate and its key ({exc.reason or exc})")  # fmt: skip
            return Check(name, "failed", detail, config_error=True)
    if ca_bundle is not None:
        try:
            context.load_verify_locations(ca_bundle)
        except ssl.SSLError as exc:
            return Check(name, "failed", f"{named('ca_bundle')} {ca_bundle} holds no PEM CA certificate "
                         f"({exc.reason or exc})", config_error=True)  # fmt: skip
    now = now or datetime.now(UTC)
    authorities = _bundle_dates(name, named("ca_bundle"), ca_bundle, server, now) if ca_bundle is not None else None
    if authorities is not None and authorities.status == "failed":
        return authorities
    if certificate is None:
        return authorities or Check(name, "ok", f"{ca_bundle}")
    own = _dates(name, f"{named('certificate')} {certificate}", certificate, refused_by, now)
    if authorities is None:
        return own
    return authorities if own.status == "ok" else Check(name, "warning", f"{own.detail}; {authorities.detail}")


def pacs_tls_check(settings: Settings, now: datetime | None = None) -> Check | None:
    """The ``PACS TLS`` check (None: no ``dispatch.pacs`` entry has ``tls``): each TLS PACS's CA bundle and client
    certificate (:func:`certificate_files_check`, as the RIS's), and this machine's CA store for those without
    ``ca_bundle`` (:func:`_ca_store_check`). The worst of them is said (a failure, else a warning, else all ok)."""
    pacs = [(f"dispatch.pacs[{i}]", destination) for i, destination in enumerate(settings.dispatch.pacs)]
    tls = [(setting, destination) for setting, destination in pacs if destination.tls]
    if not tls:
        return None
    checks: list[Check] = []
    on_store = [f"{setting}.tls" for setting, destination in tls if destination.ca_bundle is None]
    if on_store:
        checks.append(_ca_store_check("PACS TLS", "the PACS", " and ".join(on_store)))
    for setting, destination in tls:
        if destination.certificate is None and destination.ca_bundle is None:
            continue  # this machine's CA store and no client certificate: judged above
        checks.append(certificate_files_check(
            "PACS TLS", f"{setting}.", destination.certificate, destination.private_key, destination.ca_bundle,
            server=False, refused_by="a PACS that asks for it refuses the association (SRs wait in the outbox)",
            now=now,
        ))  # fmt: skip
    worst: tuple[Literal["failed", "warning"], ...] = ("failed", "warning")
    for status in worst:
        if found := [check for check in checks if check.status == status]:
            return found[0] if len(found) == 1 else Check("PACS TLS", status, "; ".join(c.detail for c in found),
                                                          config_error=any(c.config_error for c in found))  # fmt: skip
    return checks[0] if len(checks) == 1 else Check("PACS TLS", "ok", "; ".join(check.detail for check in checks))


def _ca_store_check(name: str, peer: str, named: str) -> Check:
    """Check ``name`` of this machine's CA store (Python's default paths, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``),
    which ``peer``'s certificate is verified against for the settings ``named``. A variable naming a file or folder
    that is not there, or a store with no CA at all, fails every handshake with "certificate verify failed": said at
    start instead."""
    paths = ssl.get_default_verify_paths()
    for variable, kind in ((paths.openssl_cafile_env, "file"), (paths.openssl_capath_env, "folder")):
        path = os.environ.get(variable)  # the hospital's CA, meant to be added, would not be: a mistake to say now
        if path and (problem := _file_problem(Path(path), folder=kind == "folder")) is not None:
            return Check(name, "failed", f"{named}: {peer} certificate is checked against the CA {kind} "
                         f"{variable}={path}, which {problem}; or unset {variable} for this machine's CA store",
                         config_error=True)  # fmt: skip
    cafile = os.environ.get(paths.openssl_cafile_env) or paths.openssl_cafile
    capath = Path(os.environ.get(paths.openssl_capath_env) or paths.openssl_capath)
    in_file = ssl.create_default_context(ssl.Purpose.SERVER_AUTH).cert_store_stats()["x509_ca"]
    in_folder = sum(1 for _ in capath.glob("*.[0-9]")) if capath.is_dir() else 0  # OpenSSL's hashed names
    if in_file == 0 and in_folder == 0:
        return Check(name, "warning", f"{named}: this machine's CA store (file {cafile}, folder {capath}) holds "
                     f"no CA certificate, so every {peer.removeprefix('the ')} certificate fails to verify: install "
                     f"the hospital's CA (update-ca-certificates) or set {paths.openssl_cafile_env} to a PEM CA "
                     "bundle")  # fmt: skip
    return Check(name, "ok", f"{named}: CA store {cafile} ({in_file} CAs), {capath} ({in_folder} CAs)")


def _file_problem(path: Path, *, folder: bool = False) -> str | None:
    if folder:
        if not path.is_dir():
            return "is not a folder" if path.exists() else "does not exist"
        return None
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


def _bundle_dates(name: str, named: str, ca_bundle: Path, server: bool, now: datetime) -> Check | None:
    """The CA bundle's certificates out of date, or None when each is valid beyond :data:`EXPIRY_WARNING`.

    Before, only the client certificate's dates were read: a repository CA that had expired (OpenSSL then refuses
    every certificate it signed, "certificate has expired") started without a word and failed each connection at
    night. Expired, not yet valid or ending soon: a warning naming each with its dates. Every one expired: failed
    for a client (``server=False``: no peer certificate can verify, nothing would ever be delivered); for the
    listener a warning (its plain port, and PACS that send no client certificate, still work)."""
    from cryptography import x509

    try:
        authorities = x509.load_pem_x509_certificates(ca_bundle.read_bytes())
    except (ValueError, OSError):  # OpenSSL read it: a form cryptography does not; say nothing of dates
        return None
    clock, expired, dated = _clock(now), 0, []
    for authority in authorities:
        text = authority.subject.rfc4514_string()  # quoted: a name with a line break cannot end the log line
        subject = repr(text[:80] + ("…" if len(text) > 80 else ""))
        if (found := _out_of_date(subject, authority, now)) is not None:
            expired += found.when is _When.EXPIRED
            dated.append(found.words)
    if not dated:
        return None
    listed = "; ".join(dated)
    if expired == len(authorities):
        refusal = (
            f"{named} {ca_bundle}: every CA certificate in it has expired ({listed}; {clock}), so no certificate "
            "the peer shows can verify against it (OpenSSL refuses a chain whose CA has expired)"
        )
        if not server:
            return Check(name, "failed", f"{refusal}: nothing would be delivered; install the CA's renewed "
                         "certificate, or correct the clock if wrong (timedatectl)", config_error=True)  # fmt: skip
        return Check(name, "warning", f"{refusal}: every client certificate is refused; install the CA's renewed "
                     "certificate")  # fmt: skip
    return Check(name, "warning", f"{named} {ca_bundle}: {len(dated)} of its {len(authorities)} CA certificate(s) "
                 f"out of date or ending soon: {listed} ({clock}); a peer certificate they signed fails to verify "
                 "then: install their renewed certificates")  # fmt: skip


def _dates(name: str, named: str, certificate: Path, refused_by: str, now: datetime) -> Check:
    """The dates of each certificate of the file (ours, then the intermediates a chain file sends): a warning when
    one is out of date or ends within :data:`EXPIRY_WARNING` (an expired one first, then one not valid yet, then
    the first to end), naming it by subject when the file holds more than ours, saying what then fails
    (``refused_by``) and what to do. Before, only the first was read: an intermediate that had ended (every peer
    refuses the chain) started without a word."""
    from cryptography import x509

    try:
        chain = x509.load_pem_x509_certificates(certificate.read_bytes())
    except (ValueError, OSError) as exc:  # OpenSSL read it: a form cryptography does not; say nothing of dates
        return Check(name, "ok", f"{certificate} (its dates not read: {exc})")
    found: list[tuple[_OutOfDate, datetime]] = []
    for index, issued in enumerate(chain):
        who = named
        if len(chain) > 1:
            text = issued.subject.rfc4514_string()  # quoted: a name with a line break cannot end the log line
            who += f": its {'certificate' if index == 0 else 'intermediate'} {text[:80]!r}"
        if (dated := _out_of_date(who, issued, now)) is not None:
            found.append((dated, issued.not_valid_after_utc))
    if not found:
        end = min(issued.not_valid_after_utc for issued in chain)
        return Check(name, "ok", f"{certificate}, valid until {end:%Y-%m-%d}")
    order = (_When.EXPIRED, _When.NOT_YET, _When.ENDING)
    worst, _ = min(found, key=lambda pair: (order.index(pair[0].when), pair[1]))
    if worst.when is _When.EXPIRED:
        detail = (f"{worst.words} ({_clock(now)}): {refused_by}; install a renewed certificate, or correct the clock "
                  "if it is wrong (timedatectl)")  # fmt: skip
    elif worst.when is _When.NOT_YET:
        detail = (f"{worst.words} and {_clock(now)}: correct this machine's clock (timedatectl; NTP) or use a "
                  f"certificate valid now; until then {refused_by}")  # fmt: skip
    else:
        detail = f"{worst.words}: renew it before then"
    return Check(name, "warning", detail)


class _When(enum.Enum):
    """How a certificate's dates stand against this machine's clock, when they are to be said."""

    EXPIRED = "expired"
    NOT_YET = "not valid yet"
    ENDING = "ending soon"


@dataclass(frozen=True)
class _OutOfDate:
    when: _When
    #: "<who> expired on …", "<who> is not valid before …", "<who> expires on …, in N day(s)"
    words: str


def _out_of_date(who: str, certificate: x509.Certificate, now: datetime) -> _OutOfDate | None:
    """The one reading of a certificate's dates (the listener's, a client's and each CA's in a bundle): expired,
    not valid yet by ``now``, or ending within :data:`EXPIRY_WARNING`, in words naming ``who``; None when valid
    beyond that."""
    start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
    if end <= now:
        return _OutOfDate(_When.EXPIRED, f"{who} expired on {end:%Y-%m-%d %H:%M} UTC")
    if start > now:
        return _OutOfDate(_When.NOT_YET, f"{who} is not valid before {start:%Y-%m-%d %H:%M} UTC")
    if end - now <= EXPIRY_WARNING:
        return _OutOfDate(_When.ENDING, f"{who} expires on {end:%Y-%m-%d %H:%M} UTC, in {(end - now).days} day(s)")
    return None


def _clock(now: datetime) -> str:
    return f"this machine's clock says {now:%Y-%m-%d %H:%M} UTC"
