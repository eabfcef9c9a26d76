"""Loading a certificate and its private key without ever asking for a passphrase, and the client context of
radtrace's outbound TLS (the ATNA repository, the RIS).

Without a password callback, OpenSSL asks for an encrypted key's passphrase on the terminal ("Enter PEM pass
phrase:") and waits there: a service has no terminal, and an operator's shell hangs. Every TLS context radtrace builds
(the listener's, the ATNA forwarder's, the RIS's) and the start-up checks load keys through this callback.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from radtrace.errors import ConfigError

__all__ = ["PassphraseNeededError", "load_key_pair", "no_passphrase", "tls_context"]


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


def tls_context(
    ca_bundle: Path | None, certificate: Path | None, private_key: Path | None, *, setting: str = "atna."
) -> ssl.SSLContext:
    """A client context (TLS 1.2+, the server's certificate verified: RFC 5425 section 5, and MLLP over TLS) with an
    optional client certificate; ``setting`` names the settings the files come from (``atna.``, ``dispatch.ris.``).

    It never asks for anything: a key encrypted with a passphrase, or a file it cannot load, is a
    :class:`ConfigError` naming the setting. (The start-up checks, :mod:`radtrace.preflight.tls`, say the same before;
    this is for a file changed since, or a caller that ran none.)"""
    try:
        context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load {setting}ca_bundle {ca_bundle}: {_why(exc)}") from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if certificate is not None and private_key is not None:
        try:
            load_key_pair(context, certificate, private_key, setting=setting)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load {setting}certificate {certificate} with {setting}private_key {private_key}: {_why(exc)}"
            ) from exc
    return context


def _why(exc: OSError | ssl.SSLError) -> str:
    return str(getattr(exc, "reason", None) or exc.strerror or exc)
