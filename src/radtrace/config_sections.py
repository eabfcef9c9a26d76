"""The sections of radtrace's settings tree: one model per service (store, broker, model, reporting, ...; the
listener's and TLS are in :mod:`radtrace.config_listener`, re-exported here).

:mod:`radtrace.config` assembles them into :class:`~radtrace.config.Settings` and loads it; import them from
there.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal
from zoneinfo import TZPATH, ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator

from radtrace.config_listener import (
    CallerRule,
    ListenerSettings,
    RoutingSettings,
    Section,
    TlsSettings,
    ae_title_problem,
    check_ae_title,
)

__all__ = [
    "ApiSettings",
    "AtnaSettings",
    "AuditSettings",
    "BrokerSettings",
    "CallerRule",
    "ConsoleSettings",
    "DicomDestination",
    "DispatchSettings",
    "ListenerSettings",
    "LoggingSettings",
    "MllpDestination",
    "ModelSettings",
    "QaSettings",
    "ReportingSettings",
    "RoutingSettings",
    "StoreSettings",
    "TlsSettings",
    "ae_title_problem",
]


class StoreSettings(Section):
    """The work database (studies, revisions, instances, jobs, outbox) and the audit tables."""

    url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite under data_dir")
    echo_sql: bool = Field(default=False, description="log every SQL statement (debugging only)")
    pool_size: int = Field(default=5, ge=1, le=100, description="connections per process (PostgreSQL)")
    connect_timeout_s: float = Field(default=10.0, gt=0, description="give up connecting after this long")
    node_watch_interval_s: float = Field(
        default=10.0,
        ge=1,
        le=300,
        description="how often each running service renews its row in the nodes table and compares its code with "
        "the database's schema floor (a node below it stops taking work within this long)",
    )
    node_stale_after_s: float = Field(
        default=30.0, ge=2, le=3600,
        description="a nodes row not renewed for this long is a service that ended without saying so (kill -9, a "
        "machine gone), no longer in the way of 'radtrace db upgrade'; at least twice node_watch_interval_s; each "
        "node writes its own limit in its row and is judged by it",
    )  # fmt: skip

    @model_validator(mode="after")
    def _node_rows(self) -> StoreSettings:
        # A row is renewed every interval: a limit under two intervals would take a live node whose one beat was
        # late (a slow database) for one that ended, and migrate under it.
        if self.node_stale_after_s < 2 * self.node_watch_interval_s:
            raise ValueError(
                f"node_stale_after_s ({self.node_stale_after_s:g}) must be at least twice node_watch_interval_s "
                f"({self.node_watch_interval_s:g}): a live node renews its row once per interval"
            )
        return self


class BrokerSettings(Section):
    """The Celery broker: a doorbell only, the database holds the truth."""

    url: str | None = Field(default=None, description="Celery broker URL; default embedded SQLite under data_dir")
    key_prefix: str = Field(
        default="", description="prefix of every broker key in Redis (several installations sharing one Redis)"
    )
    gpu_queue: str = Field(default="radtrace.gpu", description="queue consumed by GPU workers (inference)")
    stat_queue: str = Field(
        default="radtrace.gpu.stat", description="queue of STAT studies, which GPU workers take before gpu_queue"
    )
    dispatch_queue: str = Field(default="radtrace.dispatch", description="queue consumed by dispatchers (CPU)")
    visibility_timeout_s: int = Field(
        default=3600, ge=60, description="an unacknowledged message is redelivered after this long (Redis)"
    )
    reconcile_interval_s: float = Field(
        default=30.0, gt=0, description="how often overdue rows are found and their doorbell rung again"
    )
    max_attempts: int = Field(default=3, ge=1, le=20, description="processing attempts before a study is failed")
    retry_backoff_initial_s: float = Field(
        default=10.0, gt=0, description="delay before the first retry of a retryable failure; doubles each attempt"
    )
    retry_backoff_max_s: float = Field(default=600.0, gt=0, description="longest delay between processing attempts")
    claim_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="a worker's claim lapses this long after its last renewal (renewed every third of it while "
        "the worker lives), and another worker takes the revision over",
    )
    overdue_after_s: float = Field(
        default=60.0, ge=0, description="a queued revision or due outbox row waiting this long is rung again"
    )
    embedded_polling_interval_s: float = Field(
        default=0.02, gt=0, le=10, description="how often workers poll the embedded SQLite broker"
    )
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535,
        description="Prometheus metrics port of a worker (plus its --metrics-offset); off when unset",
    )  # fmt: skip


class ModelSettings(Section):
    """Which reasoning VLM reads the images, where its weights are, and how it generates."""

    profile: Literal["nv-reason-cxr", "deepmedix-r1"] = Field(
        default="nv-reason-cxr", description="prompt, image budget, parser and labels of the model family"
    )
    backend: Literal["transformers", "vllm", "onnxruntime", "demo"] = Field(
        default="transformers",
        description="what runs the model: in-process transformers, a vLLM server, ONNX Runtime, or demo (recorded "
        "model texts replayed, needs model.demo)",
    )
    demo: bool = Field(
        default=False,
        description="allow the demo backend: recorded model texts, every draft marked DEMO - NOT A MODEL READING",
    )
    path: Path | None = Field(
        default=None,
        description="local directory with the weights; backend onnxruntime: what 'radtrace model export-onnx' wrote",
    )
    repo_id: str = Field(default="nvidia/NV-Reason-CXR-3B", description="looked up in the local HF cache only")
    revision: str | None = Field(default=None, description="model revision (commit) recorded in the audit")
    allow_download: bool = Field(default=False, description="never download at run time unless explicitly allowed")
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto, cpu, cuda or cuda:N")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto", description="auto is bfloat16 on CUDA, float32 on CPU (float16 overflows in Qwen2.5-VL)"
    )
    max_new_tokens: int = Field(default=2048, ge=1, le=32768, description="generation budget; hitting it = truncated")
    min_pixels: int = Field(default=128 * 128, ge=28 * 28, description="smallest image area the processor sees")
    max_pixels: int = Field(default=476 * 476, ge=28 * 28, description="largest image area the processor sees")
    batch_size: int = Field(
        default=1,
        ge=1,
        le=256,
        description="studies a GPU worker claims and reads in one generate call (sizing: docs/operations.md)",
    )
    batch_wait_ms: int = Field(
        default=20, ge=0, le=1000, description="with fewer due studies than batch_size, look once more after this long"
    )
    draft_processes: int = Field(
        default=1,
        ge=0,
        le=64,
        description="processes building a GPU worker's drafts while it reads the next batch "
        "(0: the worker builds them itself, between batches)",
    )
    kv_cache: Literal["dynamic", "static"] = Field(
        default="dynamic",
        description="transformers KV cache: static preallocates it and, on CUDA, compiles the decoding step "
        "(minutes of compilation per batch shape at start; measure with bench/inference.py --full-size --cache)",
    )
    accept_unknown_view: bool = Field(
        default=True,
        description="read a chest image whose view is recorded nowhere when no frontal one is known (flagged)",
    )
    onnx_threads: int = Field(
        default=0, ge=0, le=256, description="backend onnxruntime: intra-op CPU threads (0: one per physical core)"
    )
    vllm_url: str | None = Field(default=None, description="base URL of a vLLM OpenAI-compatible server")
    vllm_api_key: SecretStr | None = Field(default=None, description="bearer token for the vLLM server")
    vllm_model: str | None = Field(default=None, description="model name served by vLLM; default: its only model")
    request_timeout_s: float = Field(default=300.0, gt=0, description="give up on one model request after this long")
    server_hold_max_s: float = Field(
        default=2 * 3600.0,
        gt=0,
        le=7 * 86400,
        description="how long a worker holds its reads for a model server that does not answer its health check, "
        "before it fails studies with the reason 'model server unavailable since ...'",
    )
    unparsed_stop_after: int = Field(
        default=4,
        ge=0,
        le=100,
        description="unparseable readings of different studies in a row after which every worker stops reading "
        "(held, audited once) until a reading parses or an operator resumes; 0: never stop",
    )
    server_probe_max_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="longest wait between health checks of a model server that is down (from 2 s, doubling); reads "
        "resume at most this long after it answers again",
    )
    worker_memory_limit_bytes: int | None = Field(
        default=None,
        ge=256 * 1024**2,
        description="address-space ceiling (RLIMIT_AS) of a worker process: an image bomb fails its study, not the "
        "host; unset where CUDA runs (it reserves large address ranges)",
    )

    @model_validator(mode="after")
    def _pixels(self) -> ModelSettings:
        if self.min_pixels > self.max_pixels:
            raise ValueError("min_pixels must not exceed max_pixels")
        if self.backend == "vllm" and not self.vllm_url:
            raise ValueError("backend 'vllm' needs vllm_url")
        if self.backend == "onnxruntime" and self.path is None:
            raise ValueError("backend 'onnxruntime' needs path: the directory written by 'radtrace model export-onnx'")
        if (self.backend == "demo") != self.demo:
            raise ValueError(
                "backend 'demo' replays recorded texts and needs demo = true; demo = true needs backend 'demo'"
            )
        return self


class ReportingSettings(Section):
    """How drafts are written: SR flavour, HL7 identities and result status, FHIR status."""

    sr_flavour: Literal["comprehensive-3d", "comprehensive"] = Field(
        default="comprehensive-3d", description="SR SOP class; Comprehensive SR for PACS that refuse 3D SR"
    )
    institution_name: str = Field(default="radtrace", description="institution named in the SR equipment module")
    hl7_result_status: Literal["P", "R"] = Field(
        default="P", description="P (preliminary) or R (unverified); F (final) is never allowed for a draft"
    )
    sending_application: str = Field(default="RADTRACE", description="HL7 MSH-3")
    sending_facility: str = Field(default="RADTRACE", description="HL7 MSH-4")
    receiving_application: str = Field(default="RIS", description="HL7 MSH-5")
    receiving_facility: str = Field(default="HOSPITAL", description="HL7 MSH-6")
    fhir_status: Literal["preliminary", "registered", "partial"] = Field(
        default="preliminary", description="FHIR DiagnosticReport.status; never final"
    )
    gsps: bool = Field(
        default=False, description="also send a GSPS drawing the model's boxes, for viewers that do not render SR"
    )
    companion_document: bool = Field(
        default=True,
        description="also send a Basic Text SR of each draft (notice, impression, findings, flags, reasoning) that "
        "every viewer shows, referencing the TID 1500 SR",
    )

    @field_validator("sending_application", "sending_facility", "receiving_application", "receiving_facility")
    @classmethod
    def _hl7_namespace(cls, value: str) -> str:
        """MSH-3 to MSH-6 hold an HD's namespace ID (IS, at most 20 characters as written, where each HL7 delimiter
        is escaped to three): a longer one or a control character would make every HL7 message fail to build, so
        every study."""
        written = len(value) + 2 * sum(value.count(c) for c in "|^~\\&")
        if written > 20:
            raise ValueError(
                f"must be at most 20 characters as HL7 writes it (each of | ^ ~ \\ & takes 3), not {written}"
            )
        if bad := sorted({c for c in value if not c.isprintable()}):
            raise ValueError(f"must not contain control characters: {''.join(map(repr, bad))}")
        if value and value.isspace():
            raise ValueError("must not be only spaces: the message would carry it empty (leave it empty, or name it)")
        return value

    @field_validator("institution_name")
    @classmethod
    def _institution(cls, value: str) -> str:
        """Institution Name is one DICOM LO value: at most 64 bytes in UTF-8 (as the drafts are written and
        validated), no backslash, no control character."""
        if (size := len(value.encode("utf-8"))) > 64:
            raise ValueError(f"must be at most 64 bytes in UTF-8 (a DICOM LO), not {size}")
        if bad := sorted({c for c in value if c == "\\" or not c.isprintable()}):
            raise ValueError(f"must not contain a backslash or control characters: {''.join(map(repr, bad))}")
        return value

    @field_validator("hl7_result_status", mode="before")
    @classmethod
    def _never_final(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().upper() == "F":
            raise ValueError("'F' (final) is refused: radtrace reports are unverified drafts")
        return value


class DicomDestination(Section):
    """A PACS (or other archive) that receives the SR by C-STORE."""

    ae_title: str = Field(description="the destination's AE title")
    host: str = Field(description="host name or address")
    port: int = Field(ge=1, le=65535, description="DICOM port")
    tls: bool = Field(default=False, description="use TLS for this association (PACS certificate verified)")
    ca_bundle: Path | None = Field(default=None, description="CAs the PACS's certificate chains to (default: system's)")
    server_name: str | None = Field(default=None, description="name checked in the PACS's certificate (default host)")
    certificate: Path | None = Field(
        default=None, description="client certificate (PEM, with its intermediates) for mutual TLS (PS3.15 B.9)"
    )
    private_key: Path | None = Field(default=None, description="client certificate's private key (PEM, no passphrase)")

    _ae = field_validator("ae_title")(check_ae_title)

    @model_validator(mode="after")
    def _tls_complete(self) -> DicomDestination:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together")
        given = [name for name in ("ca_bundle", "server_name", "certificate") if getattr(self, name) is not None]
        if given and not self.tls:  # else the SR would leave in plain text, whoever believed it secured
            raise ValueError(f"{', '.join(given)} set but tls is off: set tls = true, or remove them")
        return self


class MllpDestination(Section):
    """A RIS interface engine receiving the HL7 ORU over MLLP."""

    host: str = Field(description="host name or address")
    port: int = Field(ge=1, le=65535, description="MLLP port")
    timeout_s: float = Field(default=30.0, gt=0, description="wait this long for the ACK")
    tls: bool = Field(default=False, description="MLLP over TLS 1.2+ (IHE ATNA secure node), RIS certificate verified")
    ca_bundle: Path | None = Field(default=None, description="CAs the RIS's certificate chains to (default: system's)")
    server_name: str | None = Field(default=None, description="name checked in the RIS's certificate (default host)")
    certificate: Path | None = Field(default=None, description="client certificate (PEM) for mutual TLS, if asked")
    private_key: Path | None = Field(default=None, description="client certificate's private key (PEM, no passphrase)")

    @model_validator(mode="after")
    def _tls_complete(self) -> MllpDestination:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together")
        given = [name for name in ("ca_bundle", "server_name", "certificate") if getattr(self, name) is not None]
        if given and not self.tls:  # else the ORU would leave in plain text, whoever believed it secured
            raise ValueError(f"{', '.join(given)} set but tls is off: set tls = true, or remove them")
        return self


class DispatchSettings(Section):
    """Where finished drafts go and how hard radtrace tries."""

    calling_ae_title: str = Field(default="RADTRACE", description="our AE title when sending SRs")
    pacs: list[DicomDestination] = Field(default_factory=list, description="PACS that receive the SR by C-STORE")
    ris: MllpDestination | None = Field(default=None, description="RIS receiving the HL7 ORU over MLLP")
    file_drop_dir: Path | None = Field(default=None, description="also write SR, HL7 and FHIR files here")
    max_attempts: int = Field(default=8, ge=1, le=100, description="delivery attempts before dispatch_failed")
    backoff_initial_s: float = Field(default=5.0, gt=0, description="first retry delay; doubles each attempt")
    backoff_max_s: float = Field(default=600.0, gt=0, description="longest retry delay")
    max_sends_per_destination: int = Field(
        default=2,
        ge=1,
        le=64,
        description="sends to one destination at a time on the whole site (every dispatcher process and node on "
        "the database together: a RIS that allows 2 connections gets at most 2); a delivery beyond it waits, "
        "unclaimed, until a send to that destination ends and rings it, so a destination that never answers holds "
        "at most this many dispatcher threads: keep it below --concurrency (4)",
    )

    _ae = field_validator("calling_ae_title")(check_ae_title)


class AuditSettings(Section):
    """The audit log's checkpoint signing key and where checkpoints are written."""

    checkpoint_key: SecretStr | None = Field(
        default=None,
        description="HMAC key for signed checkpoints; required by 'audit checkpoint', no default",
    )
    checkpoint_dir: Path | None = Field(default=None, description="where signed checkpoints are written")


class AtnaSettings(Section):
    """Forwarding the audit trail to an audit record repository (IHE ATNA: DICOM PS3.15 A.5 over syslog)."""

    enabled: bool = Field(default=False, description="run the forwarder ('radtrace audit forward', and under serve)")
    transport: Literal["tls", "udp", "tcp"] = Field(
        default="tls", description="tls: RFC 5425 (port 6514); udp: RFC 5426; tcp: plain octet-counted, tests only"
    )
    host: str | None = Field(default=None, description="the repository's syslog host; required when enabled")
    port: int = Field(default=6514, ge=1, le=65535, description="the repository's syslog port")
    ca_bundle: Path | None = Field(default=None, description="CAs the repository's certificate must chain to (TLS)")
    server_name: str | None = Field(default=None, description="name checked in the repository's certificate (host)")
    certificate: Path | None = Field(default=None, description="client certificate (PEM), if the repository asks")
    private_key: Path | None = Field(default=None, description="client certificate's private key (PEM)")
    audit_source_id: str | None = Field(default=None, description="Audit Source ID in messages; default host name")
    enterprise_site_id: str | None = Field(default=None, description="Audit Enterprise Site ID in messages")
    cursor_file: Path | None = Field(
        default=None, description="last forwarded seq (fsynced); default <data_dir>/atna/cursor.json"
    )
    batch_size: int = Field(default=500, ge=1, le=10000, description="audit rows read and sent per write")
    poll_interval_s: float = Field(default=1.0, gt=0, description="how often an idle forwarder looks for new rows")
    settle_s: float = Field(
        default=2.0,
        ge=0,
        description="sent rows count as delivered once the connection outlived them by this long (syslog has no "
        "acknowledgement); rows resent after a failure are at most this window",
    )
    backoff_initial_s: float = Field(default=1.0, gt=0, description="first reconnect delay; doubles each failure")
    backoff_max_s: float = Field(default=60.0, gt=0, description="longest reconnect delay")
    metrics_port: int | None = Field(default=None, ge=1, le=65535, description="Prometheus metrics of the forwarder")
    max_message_bytes: int = Field(
        default=8096,
        ge=8096,
        le=65507,
        description="the longest syslog message sent, header included: the repository's limit (rsyslog's "
        "maxMessageSize, 8k by default); a message over it has its longest values cut, marked. Raise it only with "
        "the repository's limit",
    )

    @model_validator(mode="after")
    def _complete(self) -> AtnaSettings:
        if self.enabled and not self.host:
            raise ValueError("atna is enabled but host is not set")
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("atna client certificate and private_key go together")
        return self


class QaSettings(Section):
    """The drift and failure rules exported as Prometheus metrics (radtrace.qa.metrics)."""

    baseline_days: int = Field(
        default=28, ge=1, le=366, description="days before the monitored ones whose label rates set the control limits"
    )
    monitored_days: int = Field(default=14, ge=1, le=366, description="recent days (UTC) checked against the baseline")
    drift_run_days: int = Field(
        default=7,
        ge=1,
        le=366,
        description="a label drifts when its daily rate stays outside its limits this many days in a row",
    )
    refresh_s: float = Field(default=60.0, ge=1.0, description="the rules are recomputed at most this often")
    time_zone: str = Field(
        default="UTC",
        description="the site's time zone, an IANA name such as America/New_York: the QA dashboard's days and weeks "
        "and the drift rules' days (Prometheus) are its local calendar days (DST days of 23 and 25 hours included), "
        "and the audit explorer shows its times in it",
    )

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        """Refused at start unless zoneinfo knows the name: a typo would otherwise fail every dashboard view."""
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
            raise ValueError(
                f"unknown time zone {value!r}: give an IANA name such as 'America/New_York', 'Europe/Berlin' or "
                f"'UTC' (zoneinfo found no such zone in {', '.join(TZPATH) or 'its search path'} or the tzdata "
                "package)"
            ) from exc
        return value


class ApiSettings(Section):
    """The read-only QA HTTP API."""

    host: str = Field(default="127.0.0.1", description="address the QA API listens on")
    port: int = Field(default=8080, ge=1, le=65535, description="QA API port")
    bootstrap_admin_token: SecretStr | None = Field(
        default=None, description="creates an admin token at first start when set; no default"
    )
    max_connections: int = Field(
        default=512,
        ge=16,
        le=65536,
        description="connections the QA API and console hold at once, from all clients (503 past it); lowered to "
        "fit the file descriptor limit",
    )
    max_connections_per_address: int = Field(
        default=32,
        ge=1,
        le=65536,
        description="connections one client address may hold (503 past it); a proxy in forwarded_allow_ips is "
        "held only to max_connections",
    )
    requests_in_flight: int = Field(
        default=32,
        ge=1,
        le=1024,
        description="requests the QA API and console answer at once, from all clients (database queries run in a "
        "pool of 40 threads); the others wait their turn",
    )
    requests_in_flight_per_address: int = Field(
        default=4,
        ge=1,
        le=1024,
        description="requests of one client address answered at once (the others wait their turn, each freed turn "
        "going to the address that waited longest); a proxy in forwarded_allow_ips is held only to "
        "requests_in_flight and its clients are counted by their X-Forwarded-For address",
    )
    forwarded_allow_ips: list[str] | None = Field(
        default=None,
        description="reverse proxies (addresses or networks, * for any) whose X-Forwarded-For and "
        "X-Forwarded-Proto are believed: each client behind them is counted and throttled by its own address; "
        "default: uvicorn's FORWARDED_ALLOW_IPS, else 127.0.0.1 and ::1",
    )
    header_timeout_s: float = Field(
        default=10.0, gt=0, le=600, description="a request's headers must arrive within this (408 and closed)"
    )
    body_timeout_s: float = Field(
        default=30.0, gt=0, le=3600, description="a request's body must arrive within this after its headers (408)"
    )
    max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=64 * 1024**2,
        description="largest request body the QA API reads (413 past it; the console's forms have their own limit)",
    )
    failed_auth_limit: int = Field(
        default=20,
        ge=1,
        le=10000,
        description="failed authentications (wrong or revoked tokens, failed console sign-ins) from one address "
        "within failed_auth_window_s before it is refused with 429",
    )
    failed_auth_window_s: float = Field(
        default=60.0, gt=0, le=86400, description="the window in which failed_auth_limit failures are counted"
    )
    failed_auth_pause_s: float = Field(
        default=60.0, gt=0, le=86400, description="how long an address is refused (429, Retry-After) once throttled"
    )

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxy_addresses(cls, value: list[str] | None) -> list[str] | None:
        for entry in value or ():
            if entry != "*":
                try:
                    ipaddress.ip_network(entry.strip(), strict=False)
                except ValueError:
                    raise ValueError(f"{entry!r} is not an IP address, a network or *") from None
        return value

    @model_validator(mode="after")
    def _per_address(self) -> ApiSettings:
        if self.max_connections_per_address > self.max_connections:
            raise ValueError("max_connections_per_address must not exceed max_connections")
        if self.requests_in_flight_per_address > self.requests_in_flight:
            raise ValueError(
                f"requests_in_flight_per_address ({self.requests_in_flight_per_address}) must not exceed "
                f"requests_in_flight ({self.requests_in_flight})"
            )
        return self


class ConsoleSettings(Section):
    """The review console (web pages under /console of the QA API process): logins, sessions, worklist."""

    enabled: bool = Field(default=True, description="serve the console under /console next to the QA API")
    idle_timeout_s: int = Field(default=900, ge=60, le=86400, description="a session idle this long is ended")
    max_failed_logins: int = Field(default=5, ge=1, le=100, description="failed logins in a row that lock an account")
    lockout_s: int = Field(default=900, ge=0, description="how long a locked account stays locked (0: until unlocked)")
    cookie_secure: Literal["auto", "always", "never"] = Field(
        default="auto", description="Secure session cookie: auto = when the request came over TLS"
    )
    trusted_user_header: str | None = Field(
        default=None,
        description="header naming the signed-in user, set by an OIDC/SAML proxy in front (off by default; see "
        "docs/ui.md)",
    )
    trusted_proxies: list[str] = Field(
        default=["127.0.0.1", "::1"], description="client addresses allowed to send trusted_user_header"
    )
    page_size: int = Field(default=50, ge=10, le=500, description="worklist rows per page")
    sync_interval_s: float = Field(
        default=2.0, ge=0, description="newly reported revisions are added to the worklist at most this often"
    )
    assessment_hl7: bool = Field(
        default=False,
        description="also send each assessment to dispatch.ris as an HL7 ORU^R01 (result status "
        "reporting.hl7_result_status: P or R, never F); the assessment SR goes to every PACS either way",
    )
    picture_cache_bytes: int = Field(
        default=64 * 1024**2,
        ge=0,
        le=4 * 1024**3,
        description="bytes of study-page pictures (PNGs) each console process keeps, least recently used out first; "
        "0 keeps none (each picture is made on every request, 0.25-2 s); a study purged from the spool is dropped "
        "within seconds",
    )


class LoggingSettings(Section):
    """Log format and level; handlers are configured only by entry points."""

    format: Literal["text", "json"] = Field(default="text", description="text for people, json for log shippers")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="minimum level logged")
