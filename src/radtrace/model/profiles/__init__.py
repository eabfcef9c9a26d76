"""Model profiles by name: :func:`get_profile` (``nv-reason-cxr`` is the default)."""

from __future__ import annotations

from typing import Final

from radtrace.model.profiles.base import ParsedText, Profile
from radtrace.model.profiles.deepmedix_r1 import DeepMedixR1
from radtrace.model.profiles.nv_reason_cxr import NvReasonCxr

__all__ = ["PROFILES", "ParsedText", "Profile", "get_profile"]

PROFILES: Final[dict[str, type[Profile]]] = {NvReasonCxr.name: NvReasonCxr, DeepMedixR1.name: DeepMedixR1}


def get_profile(name: str) -> Profile:
    """The profile called ``name``.

    Raises:
        ValueError: no such profile (the settings validate the name, so only a caller's typo gets here).
    """
    try:
        return PROFILES[name]()
    except KeyError:
        raise ValueError(f"unknown model profile {name!r}; known: {', '.join(PROFILES)}") from None
