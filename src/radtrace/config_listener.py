"""The DICOM-facing sections of radtrace's settings: the listener (its AE, callers, limits and routing) and TLS, with
the base every section shares and the AE-title rule the dispatch destinations use too.

:mod:`radtrace.config` assembles them with :mod:`radtrace.config_sections` into :class:`~radtrace.config.Settings`;
import them from there.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

__all__ = [
    "CallerRule",
    "ListenerSettings",
    "RoutingSettings",
    "Section",
    "SenderCharset",
    "TlsSettings",
    "ae_title_problem",
    "check_ae_title",
]


def ae_title_problem(title: str) -> str | None:
    """What makes ``title`` an invalid AE title (PS3.5 6.2: 1 to 16 characters of the default repertoire, no
    backslash or control characters, not only spaces), or None."""
    if not title.strip():
        return "an AE title may not be empty"
    if len(title) > 16:
        return f"an AE title has at most 16 characters (this one has {len(title)})"
    if "\\" in title or any(ord(char) < 32 or ord(char) > 126 for char in title):
        return "an AE title is printable ASCII without backslashes"
    return None


def check_ae_title(value: str) -> str:
    if ae_title_problem(value) is not None:
        raise ValueError("must be 1-16 printable ASCII characters, not only spaces, without '\\'")
    return value.strip()


class Section(BaseModel):
    """A section of the settings tree: no unknown keys, not changed once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CallerRule(Section):
    """One allowed calling AE, optionally pinned to a source address or network."""

    ae_title: str = Field(description="calling AE title")
    host: str | None = Field(default=None, description="IP address or CIDR network the AE must call from")

    _ae = field_validator("ae_title")(check_ae_title)

    @field_validator("host")
    @classmethod
    def _valid_host(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_network(value, strict=False)
        return value


class SenderCharset(Section):
    """The character set one calling AE's text is really in (a modality that declares ISO 8859-6 and writes
    Windows-1256): read in it, nothing guessed, the rule named in the records."""

    ae_title: str = Field(description="calling AE title whose text this is")
    declared: str | None = Field(
        default=None,
        description="only where its Specific Character Set (0008,0005) is exactly this (e.g. ISO_IR 127; values "
        "joined by a backslash); unset: whatever it declares",
    )
    actual: str = Field(
        description="what its text is really in: a DICOM defined term without code extensions (ISO_IR 192 ...), a "
        "Windows code page (cp1250 ... cp1257, cp874) or a DOS one (cp720 Arabic, cp737 Greek, cp862 Hebrew, cp866 "
        "Cyrillic)"
    )

    _ae = field_validator("ae_title")(check_ae_title)

    @field_validator("declared")
    @classmethod
    def _declared(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Z0-9 _\\]{1,64}", value):
            raise ValueError("must be a Specific Character Set value: upper-case letters, digits, spaces, '_', '\\'")
        return value

    @field_validator("actual")
    @classmethod
    def _actual(cls, value: str) -> str:
        from radtrace.dicom_charset import check_actual  # pydicom: only when the setting is given

        return check_actual(value)


class TlsSettings(Section):
    """TLS for DICOM associations (DICOM PS3.15 Annex B); off unless a certificate is given."""

    enabled: bool = Field(default=False, description="accept only TLS associations")
    certificate: Path | None = Field(default=None, description="server certificate (PEM)")
    private_key: Path | None = Field(default=None, description="server private key (PEM)")
    ca_bundle: Path | None = Field(default=None, description="CA certificates that client certificates must chain to")
    require_client_certificate: bool = Field(default=False, description="mutual TLS: refuse clients without one")

    @model_validator(mode="after")
    def _complete(self) -> TlsSettings:
        if self.enabled and (self.certificate is None or self.private_key is None):
            raise ValueError("TLS is enabled but certificate or private_key is not set")
        if self.require_client_certificate and self.ca_bundle is None:
            raise ValueError("require_client_certificate needs ca_bundle to verify clients against")
        return self


def _check_pattern(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from exc
    return value


class RoutingSettings(Section):
    """Which completed studies go to the model, and which of them are read first (STAT).

    A study goes to the model when one of its instances is a CR/DX radiograph whose Modality is in
    ``modalities`` and whose Body Part Examined is in ``chest_body_parts``, or, when no instance records a
    body part, whose Study Description matches ``chest_description`` or names no other part of the body
    (``other_anatomy_description``: real archives hold chest films with neither); the rest end ``skipped(reason)``.
    A queued study is STAT when an instance's Requested Procedure Priority (0040,1003) is in
    ``stat_requested_priorities``, it was sent by an AE in ``stat_calling_ae_titles``, or its Study
    Description matches ``stat_description``. Matching ignores case.
    """

    modalities: list[str] = Field(default=["CR", "DX"], description="modalities read by the model")
    chest_body_parts: list[str] = Field(
        default=["CHEST", "THORAX", "LUNG", "RIBS", "TORAX", "PECHO"],
        description="Body Part Examined values that mean the chest",
    )
    chest_description: str = Field(
        default=r"\b(CHEST|THORAX|THORACIC|CXR|LUNGS?|TORAX)\b",
        description="regular expression on the Study Description, used when no instance records a body part",
    )
    other_anatomy_description: str | None = Field(
        default=r"\b(HAND|FINGERS?|WRIST|FOREARM|ELBOW|HUMERUS|SHOULDER|CLAVICLE|SKULL|HEAD|FACE|SINUS(ES)?|"
        r"C-?SPINE|CERVICAL|L-?SPINE|LUMBAR|SPINE|PELVIS|HIPS?|FEMUR|KNEES?|TIBIA|FIBULA|ANKLE|FOOT|FEET|TOES?|"
        r"ABDOMEN|ABDOMINAL|KUB|MAMMO\w*|BREAST|DENTAL|EXTREMITY)\b",
        description="regular expression on the Study Description naming another part of the body: with no body part "
        "recorded and a description that names neither the chest nor this, the study is read (the model refuses "
        "what is not a chest film)",
    )
    stat_requested_priorities: list[str] = Field(
        default=["STAT"], description="Requested Procedure Priority values (STAT, HIGH, …) that make a study STAT"
    )
    stat_calling_ae_titles: list[str] = Field(
        default_factory=list, description="calling AE titles whose studies are all STAT (e.g. the emergency room)"
    )
    stat_description: str | None = Field(
        default=r"\bSTAT\b", description="regular expression on the Study Description that makes a study STAT"
    )

    _patterns = field_validator("chest_description", "other_anatomy_description", "stat_description")(_check_pattern)


class ListenerSettings(Section):
    """The DICOM C-STORE/C-ECHO SCP that the PACS routes studies to."""

    ae_title: str = Field(default="RADTRACE", description="our AE title; callers must address it when check_called_ae")
    host: str = Field(default="0.0.0.0", description="address to listen on (the PACS must reach it)")  # noqa: S104
    port: int = Field(default=11112, ge=1, le=65535, description="DICOM port (104 is the well-known one)")
    allowed_callers: list[CallerRule] = Field(
        default_factory=list, description="calling AE titles (optionally with source network) allowed to associate"
    )
    accept_unknown_callers: bool = Field(
        default=False,
        description="accept any calling AE; for a first setup only, every association is audited",
    )
    check_called_ae: bool = Field(default=True, description="reject associations addressed to another AE title")
    max_associations: int = Field(default=10, ge=1, le=1000, description="concurrent associations before refusing")
    max_associations_per_source: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="concurrent associations one source address may hold; unset: half of max_associations",
    )
    acse_timeout_s: float = Field(default=30.0, gt=0, description="association negotiation timeout")
    dimse_timeout_s: float = Field(default=60.0, gt=0, description="timeout waiting for a DIMSE message")
    network_timeout_s: float = Field(default=60.0, gt=0, description="idle connection timeout")
    max_pdu_bytes: int = Field(
        default=4 * 1024**2,
        ge=4096,
        le=64 * 1024**2,
        description="largest P-DATA-TF PDU accepted (advertised at negotiation); a peer sending more is aborted",
    )
    max_buffered_bytes: int = Field(
        default=256 * 1024**2,
        ge=1024**2,
        description="PDU bytes all connections together may hold in memory; a connection that would pass it is aborted",
    )
    negotiation_timeout_s: float = Field(
        default=10.0, gt=0, description="wall-clock limit from TCP connect to an established association"
    )
    min_transfer_rate_bytes_s: int = Field(
        default=64 * 1024,
        ge=1,
        description="a PDU must arrive within pdu_grace_s plus its length at this rate, else the peer is cut off",
    )
    pdu_grace_s: float = Field(
        default=5.0, gt=0, description="time every PDU may take on top of its length at the rate"
    )
    max_association_s: float = Field(default=3600.0, gt=0, description="wall-clock limit of one whole association")
    max_half_open_per_source: int = Field(
        default=32, ge=1, description="connections one source address may have open before its association is agreed"
    )
    max_half_open: int = Field(
        default=512, ge=1, description="connections from all sources together before their association is agreed"
    )
    max_image_pixels: int = Field(
        default=50_000_000,
        ge=1,
        description="largest image accepted: rows x columns x samples x frames, from the header and the codestream",
    )
    refusal_audit_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="refused associations are audited, and logged, once per source and reason per interval",
    )
    negotiation_cpu_rate_s: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="CPU seconds per second one source (IPv4 address, IPv6 /64) earns back for association "
        "negotiation; a source in debt has its connections closed at accept",
    )
    negotiation_cpu_burst_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="CPU seconds one source may spend on association negotiation at once, before the rate binds",
    )
    metrics_host: str | None = Field(
        default=None,
        description=(
            "address the listener's, the workers' and the ATNA forwarder's metrics ports bind to (each holds at "
            "most 16 connections, 4 from one address); default: listener.host"
        ),
    )
    settle_seconds: float = Field(
        default=10.0, gt=0, description="study is complete after this long with no new instance"
    )
    min_free_bytes: int = Field(default=2 * 1024**3, ge=0, description="below this free space, refuse with 0xA700")
    processes: int = Field(
        default=1, ge=1, le=64, description="listener processes sharing the port (SO_REUSEPORT), one per CPU core"
    )
    fsync: bool = Field(
        default=True, description="fsync each instance before answering success; off only to compare with peers"
    )
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="Prometheus metrics port (process N uses port + N); off when unset"
    )
    non_chest_policy: Literal["accept-and-skip", "reject"] = Field(
        default="accept-and-skip", description="misrouted non-chest data: store and skip with an audit entry, or refuse"
    )
    assumed_character_set: str = Field(
        default="ISO_IR 100",
        description="what a header's text is read as when its Specific Character Set is absent, ISO_IR 6 or unknown "
        "and its bytes are not UTF-8 (valid UTF-8 is read as UTF-8); drafts are flagged character-set-assumed",
    )
    sender_character_sets: list[SenderCharset] = Field(
        default_factory=list,
        description="per calling AE (optionally per declared Specific Character Set), the character set its text is "
        'really in, e.g. [{ae_title = "CR_ROOM_3", declared = "ISO_IR 127", actual = "cp1256"}]; the first '
        "rule that fits applies, where every text value decodes in it (else the usual reading, with its flags)",
    )
    tls: TlsSettings = Field(default_factory=TlsSettings)
    plain_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="a second DICOM port without TLS, served by the same listener and limits, for modalities that "
        "cannot do TLS; only with listener.tls.enabled (listener.port stays the TLS port); off when unset",
    )
    plain_allowed_callers: list[CallerRule] | None = Field(
        default=None,
        description="calling AE titles (pin them to their host) admitted on plain_port; unset: the allowed_callers "
        "and accept_unknown_callers of listener.port; set: only these, even with accept_unknown_callers",
    )
    routing: RoutingSettings = Field(default_factory=RoutingSettings)

    _ae = field_validator("ae_title")(check_ae_title)

    @field_validator("assumed_character_set")
    @classmethod
    def _charset(cls, value: str) -> str:
        from radtrace.dicom_charset import check_assumed  # pydicom: only when the setting is given

        return check_assumed(value)

    @field_validator("sender_character_sets")
    @classmethod
    def _one_rule_each(cls, value: list[SenderCharset]) -> list[SenderCharset]:
        seen: set[tuple[str, str | None]] = set()
        for index, rule in enumerate(value):
            if (rule.ae_title, rule.declared) in seen:
                raise ValueError(f"rule {index} repeats an earlier rule's ae_title and declared")
            seen.add((rule.ae_title, rule.declared))
        return value

    @field_validator("plain_port")
    @classmethod
    def _plain_port(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is None:
            return None
        tls, port = info.data.get("tls"), info.data.get("port")
        if tls is not None and not tls.enabled:
            raise ValueError(
                "needs listener.tls.enabled: it is a second port, without TLS, beside the TLS of listener.port (a "
                "listener without TLS serves plain DICOM on listener.port alone)"
            )
        if value == port:
            raise ValueError(f"must be another port than listener.port ({port})")
        metrics, processes = info.data.get("metrics_port"), info.data.get("processes", 1)
        if metrics is not None and 0 <= value - metrics < processes:
            raise ValueError(
                f"is one of the listener's metrics ports (listener.metrics_port {metrics} to "
                f"{metrics + processes - 1}, one per listener.processes)"
            )
        return value

    @field_validator("plain_allowed_callers")
    @classmethod
    def _plain_callers(cls, value: list[CallerRule] | None, info: ValidationInfo) -> list[CallerRule] | None:
        if value is not None and info.data.get("plain_port") is None:
            raise ValueError("only with listener.plain_port: set it too, or unset this")
        return value

    @property
    def metrics_bind_host(self) -> str:
        """Where every metrics port binds: ``metrics_host``, else where the listener binds."""
        return self.metrics_host or self.host

    @property
    def per_source_associations(self) -> int:
        """The associations one source address may hold: the setting, else half the slots (never more than all)."""
        chosen = self.max_associations_per_source or max(1, self.max_associations // 2)
        return min(chosen, self.max_associations)
