"""The TLS contexts built at run time (the listener's, the ATNA forwarder's, ``dispatch.ris``'s) never ask for a
passphrase.

Before, ``tls_context`` loaded the client key with no password callback: for a key encrypted with a passphrase,
OpenSSL wrote "Enter PEM pass phrase:" on the terminal and waited there for ever (in a service: no terminal, or a
shell left hanging). The start-up checks refuse such a key, but a context is also built where they did not run
(a caller of the library, or a key replaced after the start). Each case runs in a child on a pseudo-terminal, as an
operator's shell would be, so that a prompt would be seen and not hang this test run.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from certificate_support import certificate_pair

pytestmark = pytest.mark.unit

ATNA = """
from radtrace.tls_keys import tls_context
tls_context(None, CERT, KEY)
"""
RIS = """
from radtrace.config import MllpDestination
from radtrace.reporting.dispatch.mllp import ris_tls_context
ris_tls_context(MllpDestination(host="h", port=2575, tls=True, certificate=CERT, private_key=KEY))
"""
LISTENER = """
from radtrace.config import TlsSettings
from radtrace.dicom_listener.ae import server_ssl_context
server_ssl_context(TlsSettings(enabled=True, certificate=CERT, private_key=KEY))
"""


def _on_a_terminal(code: str, certificate: Path, key: Path, wait_s: float = 8.0) -> tuple[str, int | None]:
    """What the child wrote on its terminal, and its exit status (None: it was still waiting, then killed)."""
    script = f"from pathlib import Path\nCERT, KEY = Path({str(certificate)!r}), Path({str(key)!r})\n{code}"
    script += "\nprint('loaded without a passphrase')\n"
    main, child_end = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-c", f"import sys\ntry:\n    exec({script!r})\nexcept Exception as exc:\n"
         "    print(type(exc).__name__, getattr(exc, 'reason', exc)); sys.exit(3)"],
        stdin=child_end, stdout=child_end, stderr=child_end, start_new_session=True,
    )  # fmt: skip
    os.close(child_end)
    said, deadline = b"", time.monotonic() + wait_s
    try:
        while time.monotonic() < deadline:
            if select.select([main], [], [], 0.2)[0]:
                try:
                    chunk = os.read(main, 4096)
                except OSError:  # the child ended and closed its side
                    break
                said += chunk
                if b"pass phrase" in said:  # OpenSSL is waiting for someone to type it
                    break
            elif child.poll() is not None:
                break
        if b"pass phrase" not in said:
            with contextlib.suppress(subprocess.TimeoutExpired):  # its terminal closed: let it finish exiting
                child.wait(max(0.1, deadline - time.monotonic()))
        return said.decode(errors="replace").replace("\r\n", "\n"), child.poll()
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(5)
        os.close(main)


@pytest.mark.parametrize(
    ("code", "setting"),
    [(ATNA, "atna."), (RIS, "dispatch.ris."), (LISTENER, "listener.tls.")],
    ids=["atna", "ris", "listener"],
)
def test_a_passphrase_key_is_a_clear_error_naming_the_setting_not_a_prompt(
    tmp_path: Path, code: str, setting: str
) -> None:
    now = datetime.now(UTC)
    certificate, key = certificate_pair(tmp_path, "locked", now - timedelta(days=1), now + timedelta(days=30), b"pw")
    said, status = _on_a_terminal(code, certificate, key)
    assert "Enter PEM pass phrase" not in said  # before: the prompt, and the child waiting on it (status None)
    assert status == 3, said
    assert said.strip() == (
        f"ConfigError {setting}private_key {key} is encrypted with a passphrase, which a service cannot be asked for: "
        "give it the key without one (openssl pkey -in KEY -out PLAIN.key; readable by its user only)"
    )

    plain_certificate, plain_key = certificate_pair(
        tmp_path, "plain", now - timedelta(days=1), now + timedelta(days=30)
    )
    said, status = _on_a_terminal(code, plain_certificate, plain_key)
    assert (said.strip(), status) == ("loaded without a passphrase", 0)
