"""TLS contexts that follow their files on disk: certificates renewed at night are used without a restart.

A hospital renews certificates (certbot, a 90-day CA, an Ansible copy) by replacing the files, renamed over or
rewritten in place, and does not restart radtrace for it. :class:`RenewedContext` holds the context built from the
files and builds it again once their content changed: the RIS sender (``dispatch.ris``), the ATNA forwarder's
connections (``atna``) and the listener's TLS port (``listener.tls``, through :func:`renewing_server_context`) use
it, each from its next connection, association or send on; what is already open keeps the context it began with.

Each :meth:`RenewedContext.get` looks at the files' status (``os.stat``: device, inode, size, modification and
change times) only. Their content is read and hashed, and stays the truth, when a status changed, when a file was
modified so recently that a rewrite within the same clock tick could leave its status as it is (Linux stamps files
with a coarse clock, and a renewed certificate of the same CA and key type often has the same size), and at least
every :data:`CHECK_EVERY_S` in any case (a file system whose times cannot be trusted).

A service running for months said a certificate near its end only at start (:mod:`radtrace.preflight.tls`). Each
context loaded now also reads when the first certificate of its certificate file (ours and the intermediates sent
with it) and the first CA of its bundle that counts (:meth:`_Dates.first_to_end`) end (``notAfter``): a process's
:class:`TlsExpiryCollector` serves the seconds left, by setting, at each Prometheus scrape
(:func:`watch_tls_expiry`), and each use says in the log, once a day per setting, a certificate ending within
:data:`EXPIRY_WARNING` (a warning) and, once, one that has ended (an error). Renewed files whose certificate is not
valid yet (``notBefore``: dropped in early, or a clock behind) are not taken until it is: the pair in use stays.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import socket
import ssl
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from radtrace.errors import ConfigError

if TYPE_CHECKING:
    from cryptography import x509

__all__ = [
    "CHECK_EVERY_S",
    "EXPIRY_WARNING",
    "RACY_S",
    "SAY_AGAIN_S",
    "RenewedContext",
    "TlsExpiryCollector",
    "renewing_server_context",
    "watch_tls_expiry",
]

log = logging.getLogger(__name__)

#: The files' content is read again at least this often when their status did not change.
CHECK_EVERY_S: Final = 30.0
#: A file modified less than this before its content was read may be rewritten without a new status (clock ticks of
#: a few ms on Linux, 1 s on some file systems, 2 s on FAT): its content is read again at each look until it is older.
RACY_S: Final = 2.0
#: A certificate (or a CA of the bundle) ending within this is said: at each start (the start-up checks,
#: :mod:`radtrace.preflight.tls`, which take it from here) and, while a service runs, once every :data:`SAY_AGAIN_S`.
EXPIRY_WARNING: Final = timedelta(days=14)
#: A certificate ending soon is said again in the log this long after (seconds: a day) while it is in use.
SAY_AGAIN_S: Final = 86_400.0

#: One version of a file: its content's SHA-256, None when it cannot be read now. By content: a file rewritten in
#: place within the clock tick of its last write keeps its modification time and often its size.
_Stamp = bytes | None
#: A file's status: (device, inode, size, modification and change time in ns), None when it cannot be looked at.
_Status = tuple[int, int, int, int, int] | None


_monotonic = time.monotonic  # the clocks, named for tests to move
_wall_ns = time.time_ns

#: The process's renewed contexts, for its expiry gauges (weak: one no longer used goes with its last user).
_watched: weakref.WeakSet[RenewedContext] = weakref.WeakSet()
_watched_lock = threading.Lock()  # a context made while a scrape copies the set
_created = itertools.count()  # of two contexts for one setting, the one made last is served
_served: weakref.WeakSet[CollectorRegistry] = weakref.WeakSet()  # registries given a TlsExpiryCollector


@dataclass(frozen=True)
class _Ends:
    """When a certificate of a loaded context ends: ``field`` (``certificate`` or ``ca_bundle``) of the setting, its
    file, who it is in the log (``its CA 'CN=…'``, ``its intermediate 'CN=…'``; empty for the certificate of a file
    that holds only it), and its ``notAfter`` in Unix seconds."""

    field: str
    path: Path
    who: str
    at: float


@dataclass(frozen=True)
class _Starts:
    """When the last certificate of a certificate file to begin does (``notBefore``, Unix seconds), and who it is."""

    path: Path
    who: str
    at: float


@dataclass(frozen=True)
class _Dates:
    """The dates of a context's files, as read when it was built: every certificate of the certificate file (ours
    and the intermediates it sends) and every CA of the bundle, each with when it ends."""

    chain: tuple[_Ends, ...] = ()
    authorities: tuple[_Ends, ...] = ()
    starts: _Starts | None = None

    def first_to_end(self, now: float) -> tuple[_Ends, ...]:
        """The certificate file's first certificate to end (any of them: an intermediate that ended breaks every
        peer's handshake as the certificate itself would), and the bundle's first CA to end that counts.

        Which CAs count: a CA bundle's CAs verify the peer's chain, which is not known until a connection (the
        listener's clients, the RIS's and the repository's servers), so not "the CAs that verify it". A CA that has
        ended verifies nothing: beside CAs still valid (a public bundle, /etc/ssl/certs/ca-certificates.crt, holds
        roots that ended years ago; a private one kept last year's CA beside the renewed one) it is left out (one
        info line, :meth:`RenewedContext._say_ends`), and the gauge follows the first of the others to end, still
        warned of within :data:`EXPIRY_WARNING` before it ends. When every CA of the bundle has ended, nothing can
        verify: the first to end is served, negative, and said as an error."""
        found = [min(self.chain, key=lambda end: end.at)] if self.chain else []
        valid = [end for end in self.authorities if end.at > now] or list(self.authorities)
        if valid:
            found.append(min(valid, key=lambda end: end.at))
        return tuple(found)

    def ended_beside_valid(self, now: float) -> list[_Ends]:
        """The bundle's CAs that have ended while others have not (left out of the gauge)."""
        ended = [end for end in self.authorities if end.at <= now]
        return ended if len(ended) < len(self.authorities) else []


def _quoted(certificate: x509.Certificate) -> str:
    text = certificate.subject.rfc4514_string()  # quoted: a name with a line break cannot end the log line
    return repr(text[:80] + ("…" if len(text) > 80 else ""))


def _read_all(path: Path) -> list[x509.Certificate]:
    """The PEM certificates of ``path``; none when cryptography cannot read it (it loaded, so a form OpenSSL
    reads: its dates are then not said)."""
    from cryptography import x509
    from cryptography.utils import CryptographyDeprecationWarning

    try:
        with warnings.catch_warnings():  # a public bundle's old root with a serial of 0 is read, not said on stderr
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            return x509.load_pem_x509_certificates(path.read_bytes())
    except (ValueError, OSError):
        return []


def _dates(certificate: Path | None, ca_bundle: Path | None) -> _Dates:
    """The dates of the certificate file (each certificate of its chain: ours first, then the intermediates) and
    of each CA of the bundle."""
    chain = _read_all(certificate) if certificate is not None else []
    authorities = _read_all(ca_bundle) if ca_bundle is not None else []
    ends, starts = [], None
    for index, issued in enumerate(chain):
        assert certificate is not None
        who = "" if len(chain) == 1 else f"its {'certificate' if index == 0 else 'intermediate'} {_quoted(issued)}"
        ends.append(_Ends("certificate", certificate, who, issued.not_valid_after_utc.timestamp()))
        if starts is None or issued.not_valid_before_utc.timestamp() > starts.at:
            starts = _Starts(certificate, who, issued.not_valid_before_utc.timestamp())
    return _Dates(
        tuple(ends),
        tuple(
            _Ends("ca_bundle", ca_bundle, f"its CA {_quoted(authority)}", authority.not_valid_after_utc.timestamp())
            for authority in authorities
            if ca_bundle is not None
        ),
        starts,
    )


def _day(unix_s: float) -> str:
    return f"{datetime.fromtimestamp(unix_s, UTC):%Y-%m-%d %H:%M} UTC"


def _stamp(path: Path) -> _Stamp:
    try:
        return hashlib.sha256(path.read_bytes()).digest()  # through a symbolic link (certbot's live/): its file now
    except OSError:
        return None


def _status(path: Path) -> _Status:
    try:
        found = os.stat(path)  # through a symbolic link, as the file is read: a link swapped is another inode
    except OSError:
        return None
    return found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns, found.st_ctime_ns


class RenewedContext:
    """A TLS context built from ``files`` by ``build``, built again when the content of one of them changed on disk.

    Renewed files are used from the next :meth:`get` on (the next send, connection or association: ``attempt`` names
    it in the log, written to ``logger``: the user's, so that the line names the process's component). A renewal
    caught half-way (the certificate replaced, its key not yet: the files do not load together) keeps the context
    loaded before, which still works, says so once in the log naming the setting, and is tried again whenever the
    files are read again, until they load; with no context loaded before, the error is raised (the first use, as
    when the context was loaded once)."""

    def __init__(
        self,
        build: Callable[[], ssl.SSLContext | None],
        files: Sequence[Path | None],
        setting: str,
        *,
        attempt: str = "send",
        logger: logging.Logger | None = None,
        certificate: Path | None = None,
        ca_bundle: Path | None = None,
    ) -> None:
        self._build, self._files, self._setting = build, tuple(path for path in files if path is not None), setting
        self._attempt, self._log = attempt, logger or log
        self._certificate, self._ca_bundle = certificate, ca_bundle  # their ends are served and said
        self._dates = _Dates()  # of the context in use
        self._waiting: _Starts | None = None  # renewed files not taken: their certificate is not valid yet
        self._left_out: set[str] = set()  # the bundle's ended CAs said (an info line) as left out of the gauge
        self._not_yet_said = False  # the certificate in use not valid yet said (once per context loaded)
        self._warned_at: dict[str, float] = {}  # field -> time.monotonic() its ending soon was last said
        self._expired_said: set[str] = set()  # fields whose end was said (once per context loaded)
        self._lock = threading.Lock()
        self._context: ssl.SSLContext | None = None
        self._built: tuple[_Stamp, ...] | None = None  # the files' stamps when the context in use was built
        self._refused: tuple[_Stamp, ...] | None = None  # the stamps last refused (said once in the log)
        self._seen: tuple[_Status, ...] | None = None  # the files' status when their content was last read
        self._read_at = 0.0  # time.monotonic() of that read
        self._racy = True  # a file was modified within RACY_S of that read: its status may not show a rewrite
        with _watched_lock:  # last: a scrape in another thread may look at it from now on
            self.created = next(_created)
            _watched.add(self)

    @property
    def setting(self) -> str:
        return self._setting

    def get(self) -> ssl.SSLContext | None:
        """The context for the files as they are now; a certificate of it ending soon, or ended, said in the log
        (once a day, or once)."""
        with self._lock:
            context = self._look()
            self._say_ends()
            return context

    def ends(self) -> dict[str, float]:
        """``certificate`` (the first certificate of its file to end) and ``ca_bundle`` (the first of its CAs that
        counts to end: :meth:`_Dates.first_to_end`): their ``notAfter`` in Unix seconds, for the context in use
        (those of ``certificate`` and ``ca_bundle`` given, read by cryptography)."""
        with self._lock:
            return {end.field: end.at for end in self._dates.first_to_end(_wall_ns() / 1e9)}

    def starts(self) -> dict[str, float]:
        """``in_use``: when the certificate file in use begins to be valid (the last ``notBefore`` of its
        certificates); ``renewed``: the same of renewed files not taken because they are not valid yet; Unix
        seconds."""
        with self._lock:
            found = {"in_use": self._dates.starts.at} if self._dates.starts is not None else {}
            return found | ({"renewed": self._waiting.at} if self._waiting is not None else {})

    def _say_ends(self) -> None:
        """Say a certificate in use ending within :data:`EXPIRY_WARNING` (a warning, once every
        :data:`SAY_AGAIN_S`) or ended (an error, once): a service running for months used to say it only at start."""
        now, wall = _monotonic(), _wall_ns() / 1e9
        starts = self._dates.starts
        if starts is not None and starts.at > wall and not self._not_yet_said:
            self._not_yet_said = True
            self._log.error(
                "%s certificate %s%s is not valid before %s and this machine's clock says %s: peers that check it "
                "refuse the connection; correct the clock (timedatectl; NTP) or install a certificate valid now "
                "(used from the next %s on, without a restart)", self._setting, starts.path,
                f": {starts.who}" if starts.who else "", _day(starts.at), _day(wall), self._attempt,
            )  # fmt: skip
        ended = [end for end in self._dates.ended_beside_valid(wall) if end.who not in self._left_out]
        if ended:
            self._left_out.update(end.who for end in ended)
            self._log.info(
                "%s ca_bundle %s: %d of its %d CAs ended (%s%s); they verify nothing and others of the bundle are "
                "valid: left out of radtrace_tls_ca_expiry_seconds, which follows the first of the others to end "
                "(a public CA bundle holds such roots)", self._setting, ended[0].path, len(ended),
                len(self._dates.authorities), ", ".join(f"{end.who} on {_day(end.at)}" for end in ended[:3]),
                ", …" if len(ended) > 3 else "",
            )  # fmt: skip
        for end in self._dates.first_to_end(wall):
            left = end.at - wall
            named = f"{self._setting} {end.field} {end.path}" + (f": {end.who}" if end.who else "")
            if left <= 0:
                if end.field + end.who not in self._expired_said:
                    self._expired_said.add(end.field + end.who)
                    self._log.error(
                        "%s expired on %s: %s; install the renewed certificate (used from the next %s on, without a "
                        "restart), or correct this machine's clock if it is wrong", named, _day(end.at),
                        "peers that check it refuse the connection" if end.field == "certificate"
                        else "a peer certificate it signed no longer verifies", self._attempt,
                    )  # fmt: skip
            elif left <= EXPIRY_WARNING.total_seconds():
                said = self._warned_at.get(end.field)
                if said is None or now - said >= SAY_AGAIN_S:
                    self._warned_at[end.field] = now
                    self._log.warning(
                        "%s expires on %s, in %d day(s) %d hour(s): renew it before then (used from the next %s on, "
                        "without a restart); said once a day", named, _day(end.at), left // 86_400,
                        left % 86_400 // 3_600, self._attempt,
                    )  # fmt: skip

    def _look(self) -> ssl.SSLContext | None:
        """The context for the files as they are now (:meth:`get`, holding the lock)."""
        seen = tuple(_status(path) for path in self._files)
        now = _monotonic()
        if self._built is not None and seen == self._seen and not self._racy and now - self._read_at < CHECK_EVERY_S:
            return self._context
        wall_ns = _wall_ns()
        stamps = tuple(_stamp(path) for path in self._files)
        self._seen, self._read_at = seen, now
        self._racy = any(status is not None and wall_ns - status[3] < RACY_S * 1e9 for status in seen)
        if stamps == self._built:
            self._waiting = None
            return self._context
        try:
            context = self._build()
        except ConfigError as exc:
            if self._built is None:
                raise
            if stamps != self._refused:
                self._refused = stamps
                self._log.warning(
                    "%s files changed on disk but cannot be loaded (%s); still using the ones loaded before, and "
                    "trying again at each %s", self._setting, exc.reason, self._attempt,
                )  # fmt: skip
            return self._context
        dates = _dates(self._certificate, self._ca_bundle) if context is not None else _Dates()
        if self._built is not None and dates.starts is not None and dates.starts.at > wall_ns / 1e9:
            # A renewal dropped in early, or this machine's clock behind: every peer that checks it would refuse it,
            # while the pair in use still works. Taken at the first look once it is valid (its content is read
            # again at least every CHECK_EVERY_S).
            self._waiting = dates.starts
            if stamps != self._refused:
                self._refused = stamps
                self._log.warning(
                    "%s files changed on disk but their certificate %s%s is not valid before %s (this machine's "
                    "clock says %s): still using the ones loaded before, until it is; a clock behind: correct it "
                    "(timedatectl; NTP)", self._setting, dates.starts.path,
                    f" ({dates.starts.who})" if dates.starts.who else "", _day(dates.starts.at), _day(wall_ns / 1e9),
                )  # fmt: skip
            return self._context
        if self._built is not None:
            self._log.info("%s files changed on disk: loaded again", self._setting)
        self._context, self._built, self._refused, self._waiting = context, stamps, None, None
        self._dates = dates
        self._warned_at.clear()  # another certificate: said again if it too ends soon
        self._expired_said.clear()
        self._not_yet_said = False
        return context


class TlsExpiryCollector(Collector):
    """``radtrace_tls_certificate_expiry_seconds{setting}`` and ``radtrace_tls_ca_expiry_seconds{setting}``: seconds
    until the certificate in use (the first of its file's chain to end), and the first CA of its ``ca_bundle`` that
    counts to end (:meth:`_Dates.first_to_end`), end (negative once ended); and
    ``radtrace_tls_certificate_valid_from_seconds{setting,certificate}``: seconds until the certificate in use
    (``in_use``) and renewed files not taken (``renewed``) are valid (positive while not valid yet), for each
    :class:`RenewedContext` of this process (``listener.tls``, ``dispatch.ris``, ``atna``), read at each scrape.

    The scrape looks at the files first (:meth:`RenewedContext.get`, a ``stat`` each): a certificate renewed on disk
    shows at once, as the next connection will use it; one never loaded (files that do not load: the sends say so)
    has no series."""

    def collect(self) -> Iterator[Metric]:
        certificate = GaugeMetricFamily(
            "radtrace_tls_certificate_expiry_seconds",
            "Seconds until the TLS certificate in use ends (notAfter), by setting; negative once it has",
            labels=["setting"],
        )
        authority = GaugeMetricFamily(
            "radtrace_tls_ca_expiry_seconds",
            "Seconds until the first CA certificate of the setting's ca_bundle to end does; negative once it has",
            labels=["setting"],
        )
        starts = GaugeMetricFamily(
            "radtrace_tls_certificate_valid_from_seconds",
            "Seconds until the TLS certificate file's certificates are all valid (notBefore), by setting: positive "
            "while one is not valid yet; certificate=in_use, or renewed (files on disk not taken until they are)",
            labels=["setting", "certificate"],
        )
        newest: dict[str, RenewedContext] = {}
        with _watched_lock:
            watched = list(_watched)
        for renewed in watched:
            if renewed.setting not in newest or renewed.created > newest[renewed.setting].created:
                newest[renewed.setting] = renewed
        for setting, renewed in sorted(newest.items()):
            try:
                renewed.get()
            except ConfigError:
                continue  # never loaded: each connection or send says why
            except Exception as exc:  # a scrape is never lost for one setting
                log.warning("%s: TLS files could not be looked at for the expiry gauges (%s: %s)", setting,
                            type(exc).__name__, exc)  # fmt: skip
                continue
            now = _wall_ns() / 1e9
            ends = renewed.ends()
            if "certificate" in ends:
                certificate.add_metric([setting], ends["certificate"] - now)
            if "ca_bundle" in ends:
                authority.add_metric([setting], ends["ca_bundle"] - now)
            for which, at in sorted(renewed.starts().items()):
                starts.add_metric([setting, which], at - now)
        yield certificate
        yield authority
        yield starts


def watch_tls_expiry(registry: CollectorRegistry) -> None:
    """Serve the TLS expiry gauges (:class:`TlsExpiryCollector`) in ``registry``, once however often called."""
    if registry in _served:
        return
    registry.register(TlsExpiryCollector())
    _served.add(registry)


class _RenewingServerContext(ssl.SSLContext):
    """The server context a TLS server is given (:func:`renewing_server_context`): each socket it wraps is wrapped
    by the renewed context in use then."""

    _renewed: RenewedContext
    _last: ssl.SSLContext

    def wrap_socket(
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        return self.in_use().wrap_socket(
            sock, server_side, do_handshake_on_connect, suppress_ragged_eofs, server_hostname, session
        )

    def in_use(self) -> ssl.SSLContext:
        """The renewed context as it is now; the last one gotten if the files cannot be looked at (logged)."""
        try:
            now = self._renewed.get()
        except Exception as exc:  # the handshake goes on with the context loaded before; never a lost connection
            log.error("TLS context could not be looked at again (%s: %s): this handshake uses the one loaded before",
                      type(exc).__name__, exc)  # fmt: skip
            return self._last
        if now is not None:
            self._last = now
        return self._last


def renewing_server_context(renewed: RenewedContext) -> ssl.SSLContext | None:
    """The server context to give a TLS server (pynetdicom's ``ssl_context``) whose every connection uses
    ``renewed``'s context as it is when the connection is wrapped: built now (a :class:`ConfigError` for files that
    do not load, as at start before), ``None`` when ``renewed`` gives none (TLS off).

    A server wraps each accepted socket with the context it was given (``wrap_socket``): the one returned wraps it
    with the renewed context, whose certificate, key and CA store (client certificates verified against the renewed
    ``ca_bundle``) are used. Connections already open keep the context they began with.

    Not only the handshake is moved: OpenSSL decides whether a client's session is resumed (a TLS 1.2 session ID or
    ticket, a TLS 1.3 ticket) against the session cache and ticket keys of the context the socket was wrapped with,
    before any callback of the handshake runs. Before, each socket was wrapped with the context built at start and
    its server-name callback moved the handshake to the renewed one: a peer resuming a session begun before the
    renewal was let in on it, with the old certificate (and a client certificate verified against the old CA
    bundle), until its next full handshake. Each renewal is a new context with its own (empty) cache and ticket
    keys: a session from before it gets a full handshake; sessions begun since resume as before."""
    context = renewed.get()
    if context is None:
        return None
    front = _RenewingServerContext(ssl.PROTOCOL_TLS_SERVER)
    front._renewed, front._last = renewed, context
    return front
