"""Loading a certificate and its private key without ever asking for a passphrase.

Without a password callback, OpenSSL asks for an encrypted key's passphrase on the terminal ("Enter PEM pass
phrase:") and waits there: a service has no terminal, and an operator's shell hangs. Every TLS context radtrace builds
(the listener's, the ATNA forwarder's, the RIS's) and the start-up checks load keys through this callback.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from radtrace.errors import ConfigError

__all__ = ["PassphraseNeededError", "load_key_pair", "no_passphrase"]


class PassphraseNeededError(Exception):
    """A private key asked for its passphrase: nobody is there to type it (a service has no terminal)."""


def no_passphrase() -> str:
    """The password callback for ``load_cert_chain``: refuses instead of prompting."""
    raise PassphraseNeededError


def load_key_pair(context: ssl.SSLContext, certificate: Path | str, private_key: Path | str, *, setting: str) -> None:
    """``context.load_cert_chain`` that never prompts: a key encrypted with a passphrase is a :class:`ConfigError`
    naming ``{setting}private_key``; other failures (OSError, ssl.SSLError) are the caller's to word."""
    try:
        context.load_cert_chain(str(certificate), str(private_key), password=no_passphrase)
    except PassphraseNeededError:
        raise ConfigError(
            f"{setting}private_key {private_key} is encrypted with a passphrase, which a service cannot be asked "
            "for: give it the key without one (openssl pkey -in KEY -out PLAIN.key; readable by its user only)"
        ) from None
