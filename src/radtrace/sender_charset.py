"""Which character set a sender's text is really in, as the site says (``listener.sender_character_sets``).

Modalities declare an ISO set in (0008,0005) and write their Windows code page (:mod:`radtrace.dicom_charset_windows`
guesses, and for Arabic a guess cannot tell many names apart: ``اردو`` in Windows-1256 is ``اردن`` in ISO 8859-6).
As a PACS's per-device "default character set" does, a site names the calling AE (and optionally the declaration)
whose text is in a given set; the reader then reads it so, guesses nothing and records which rule it applied
(:data:`radtrace.dicom_charset.SITE_RULE`). The calling AE is the one the instance's row records
(``instances.calling_ae``), so the worker applies the rules as they stand when it reads.
"""

from __future__ import annotations

from radtrace.config import ListenerSettings
from radtrace.dicom_charset import SiteCharset

__all__ = ["SETTING", "sender_rules"]

SETTING = "listener.sender_character_sets"


def sender_rules(listener: ListenerSettings, calling_ae: str | None) -> tuple[SiteCharset, ...]:
    """The site's rules for text sent by ``calling_ae`` (None: unknown, no rule), in the setting's order, each named
    by its place in the setting."""
    if not calling_ae or not listener.sender_character_sets:
        return ()
    calling = calling_ae.strip()
    return tuple(
        SiteCharset(rule=f"{SETTING}[{index}]", declared=entry.declared, actual=entry.actual)
        for index, entry in enumerate(listener.sender_character_sets)
        if entry.ae_title == calling
    )
