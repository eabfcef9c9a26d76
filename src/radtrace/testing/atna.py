"""A real rsyslog as an audit record repository for the ATNA tests and bench/atna.py: TLS with throw-away certificates.

``make_pki`` builds a CA, a server certificate for localhost/127.0.0.1 and a client certificate with the
``cryptography`` package. :class:`Rsyslog` runs ``rsyslogd -n`` on a free port with a config in a temporary
folder: imtcp (octet-counted RFC 5425 framing over TLS, client certificates checked), direct queues (a message is
in the file before the next is read from the socket) and one line per message in ``received.log``:
the structured data, a tab, the JSON-escaped MSG.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from radtrace.testing.services import free_port as services_free_port

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


#: How long the CA and its certificates are valid: beyond radtrace.tls_renewal.EXPIRY_WARNING, as a site's are, so
#: that a running service says nothing of their dates (a day made every process using them warn of its end).
VALID_FOR = dt.timedelta(days=365)


def make_pki(directory: Path, *, server_expired: bool = False) -> Pki:
    """A CA that signed a server certificate (localhost, 127.0.0.1) and a client certificate.

    ``server_expired``: the server certificate's validity ended a minute ago (a repository that missed its renewal).
    Otherwise each is valid for :data:`VALID_FOR`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("radtrace test CA"))
        .issuer_name(_name("radtrace test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths = Pki(*(directory / name for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")))
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def leaf(
        common_name: str, usage: x509.ObjectIdentifier, cert_path: Path, key_path: Path, *, expired: bool = False
    ) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        ends = now - dt.timedelta(minutes=1) if expired else now + VALID_FOR
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(min(now, ends) - dt.timedelta(minutes=5))
            .not_valid_after(ends)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        )
        cert_path.write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)

    leaf("localhost", ExtendedKeyUsageOID.SERVER_AUTH, paths.server_cert, paths.server_key, expired=server_expired)
    leaf("radtrace-client", ExtendedKeyUsageOID.CLIENT_AUTH, paths.client_cert, paths.client_key)
    return paths


def free_port() -> int:
    """A port free for both TCP and UDP (syslog listens on either), from the tests' own range."""
    return services_free_port(also_udp=True)


def _udp_port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return True  # rsyslog's imudp has it
    return False


@dataclass(frozen=True)
class Received:
    """One message as rsyslog wrote it: the structured data and the MSG (BOM removed)."""

    structured_data: str
    msg: str

    @property
    def seq(self) -> int:
        return int(self.structured_data.split('seq="', 1)[1].split('"', 1)[0])


def _last_whole_record(line: str) -> str:
    """The record a line of the output holds. A line with more than one tab (a MSG is JSON-escaped, so it holds
    none) is a record rsyslogd was writing when it was killed (SIGKILL, :meth:`Rsyslog.kill`) followed by the next
    rsyslogd's first: the torn one is what that repository lost in its crash, the second starts where the torn one's
    first structured-data element recurs."""
    if line.count("\t") <= 1:
        return line
    structured, _, rest = line.partition("\t")
    element = structured.split(" ", 1)[0]  # e.g. '[radtrace@32473': every record begins with it
    return rest[rest.rfind(element, 0, rest.rfind("\t")) :]


class Rsyslog:
    """rsyslogd in the foreground with its own config: TLS unless ``pki`` is None, plus an optional plain port."""

    def __init__(
        self,
        directory: Path,
        port: int,
        pki: Pki | None,
        *,
        plain_port: int | None = None,
        udp_port: int | None = None,
        driver: str = "gtls",
        max_message_size: str | None = None,
    ) -> None:
        self.directory, self.port, self.pki, self.plain_port = directory, port, pki, plain_port
        self.udp_port = udp_port
        self.max_message_size = max_message_size  # None: rsyslog's default (8096 bytes), as a hospital runs it
        self.driver = driver  # gtls (GnuTLS) or ossl (OpenSSL: sends TLS 1.3 session tickets after the handshake)
        self.output = directory / "received.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._counted_bytes = self._counted_lines = 0
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "work").mkdir(exist_ok=True)
        self.config = directory / "rsyslog.conf"
        self.config.write_text(self._config(), encoding="utf-8")

    def _config(self) -> str:
        tls_globals = ""
        driver = ""
        if self.pki is not None:
            tls_globals = (
                f'  defaultNetstreamDriverCAFile="{self.pki.ca}"\n'
                f'  defaultNetstreamDriverCertFile="{self.pki.server_cert}"\n'
                f'  defaultNetstreamDriverKeyFile="{self.pki.server_key}"\n'
            )
            # x509/certvalid: the client must present a certificate signed by the CA (mutual TLS).
            driver = f' streamDriver.name="{self.driver}" streamDriver.mode="1" streamDriver.authMode="x509/certvalid"'
        plain = ""
        if self.plain_port is not None:  # a second, unencrypted listener (for peers that cannot speak TLS)
            plain = (
                'module(load="imptcp")\n'
                f'input(type="imptcp" address="127.0.0.1" port="{self.plain_port}" supportOctetCountedFraming="on")\n'
            )
        if self.udp_port is not None:  # RFC 5426: one message per datagram
            plain += f'module(load="imudp")\ninput(type="imudp" address="127.0.0.1" port="{self.udp_port}")\n'
        size = f'  maxMessageSize="{self.max_message_size}"\n' if self.max_message_size else ""
        return f"""
global(
  workDirectory="{self.directory / "work"}"
{size}  parser.escapeControlCharactersOnReceive="off"
{tls_globals})
main_queue(queue.type="Direct")
module(load="imtcp"{driver})
input(type="imtcp" address="127.0.0.1" port="{self.port}")
{plain}template(name="atna" type="list") {{
  property(name="structured-data")
  constant(value="\\t")
  property(name="msg" format="json")
  constant(value="\\n")
}}
action(type="omfile" file="{self.output}" template="atna" flushOnTXEnd="on" asyncWriting="off")
"""

    def start(self, timeout_s: float = 10.0) -> None:
        """Start rsyslogd and wait until it accepts connections."""
        with (self.directory / "rsyslogd.stderr").open("ab") as stderr:
            self.process = subprocess.Popen(
                [RSYSLOGD, "-n", "-f", str(self.config), "-i", str(self.directory / "rsyslogd.pid")],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"rsyslogd exited: {(self.directory / 'rsyslogd.stderr').read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            except OSError:
                time.sleep(0.05)
                continue
            if self.udp_port is None or _udp_port_taken(self.udp_port):
                return
            time.sleep(0.05)
        raise RuntimeError("rsyslogd did not start listening")

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        (self.directory / "rsyslogd.pid").unlink(missing_ok=True)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        (self.directory / "rsyslogd.pid").unlink(missing_ok=True)

    def count_lines(self) -> int:
        """Messages written so far (counts newlines incrementally, cheap to call often)."""
        if not self.output.exists():
            return 0
        with self.output.open("rb") as handle:
            handle.seek(self._counted_bytes)
            chunk = handle.read()
        self._counted_bytes += len(chunk)
        self._counted_lines += chunk.count(b"\n")
        return self._counted_lines

    def received(self) -> list[Received]:
        """Every message written so far, in file order."""
        if not self.output.exists():
            return []
        messages = []
        for line in self.output.read_text(encoding="utf-8").splitlines():
            structured, _, escaped = _last_whole_record(line).partition("\t")
            msg = json.loads(f'"{escaped}"')
            messages.append(Received(structured, msg.removeprefix("\ufeff")))
        return messages
