"""radtrace's configuration: one typed settings tree, passed explicitly to whatever needs it.

Sources, highest priority first: keyword arguments (tests), ``RADTRACE_*`` environment variables
(nested with ``__``, e.g. ``RADTRACE_LISTENER__PORT=104``), an optional TOML file given with
``--config``, then the defaults below. The defaults are the *embedded* setup: SQLite for the
store, an SQLite-backed embedded broker, everything under ``data_dir``. Production points
``store.url`` at PostgreSQL and ``broker.url`` at Redis.

An invalid value fails at start with :class:`radtrace.errors.ConfigError` naming the setting and
its environment variable; secrets (tokens, keys, passwords inside URLs) are masked when shown.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from radtrace.errors import ConfigError

__all__ = ["Settings", "load_settings", "masked_settings"]

ENV_PREFIX = "RADTRACE_"
ENV_NESTED_DELIMITER = "__"
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # DICOM AE: 16 chars of the default repertoire, no '\'


def _check_ae_title(value: str) -> str:
    if not _AE_TITLE.match(value) or not value.strip():
        raise ValueError("must be 1-16 printable ASCII characters, not only spaces, without '\\'")
    return value.strip()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CallerRule(_Section):
    """One allowed calling AE, optionally pinned to a source address or network."""

    ae_title: str
    host: str | None = Field(default=None, description="IP address or CIDR network the AE must call from")

    _ae = field_validator("ae_title")(_check_ae_title)

    @field_validator("host")
    @classmethod
    def _valid_host(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_network(value, strict=False)
        return value


class TlsSettings(_Section):
    """TLS for DICOM associations (DICOM PS3.15 Annex B); off unless a certificate is given."""

    enabled: bool = False
    certificate: Path | None = None
    private_key: Path | None = None
    ca_bundle: Path | None = None
    require_client_certificate: bool = False

    @model_validator(mode="after")
    def _complete(self) -> TlsSettings:
        if self.enabled and (self.certificate is None or self.private_key is None):
            raise ValueError("TLS is enabled but certificate or private_key is not set")
        if self.require_client_certificate and self.ca_bundle is None:
            raise ValueError("require_client_certificate needs ca_bundle to verify clients against")
        return self


class ListenerSettings(_Section):
    """The DICOM C-STORE/C-ECHO SCP that the PACS routes studies to."""

    ae_title: str = "RADTRACE"
    host: str = "0.0.0.0"  # noqa: S104 - a DICOM node is reached from the PACS, not only from localhost
    port: int = Field(default=11112, ge=1, le=65535)
    allowed_callers: list[CallerRule] = Field(default_factory=list)
    accept_unknown_callers: bool = Field(
        default=False,
        description="accept any calling AE; for a first setup only, every association is audited",
    )
    check_called_ae: bool = True
    max_associations: int = Field(default=10, ge=1, le=1000)
    acse_timeout_s: float = Field(default=30.0, gt=0)
    dimse_timeout_s: float = Field(default=60.0, gt=0)
    network_timeout_s: float = Field(default=60.0, gt=0)
    max_pdu_bytes: int = Field(default=0, ge=0, description="0 means unlimited")
    settle_seconds: float = Field(
        default=10.0, gt=0, description="study is complete after this long with no new instance"
    )
    min_free_bytes: int = Field(default=2 * 1024**3, ge=0, description="below this free space, refuse with 0xA700")
    non_chest_policy: Literal["accept-and-skip", "reject"] = "accept-and-skip"
    tls: TlsSettings = Field(default_factory=TlsSettings)

    _ae = field_validator("ae_title")(_check_ae_title)


class StoreSettings(_Section):
    """The work database (studies, revisions, instances, jobs, outbox) and the audit tables."""

    url: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite under data_dir")
    echo_sql: bool = False
    pool_size: int = Field(default=5, ge=1, le=100)
    connect_timeout_s: float = Field(default=10.0, gt=0)


class BrokerSettings(_Section):
    """The Celery broker: a doorbell only, the database holds the truth."""

    url: str | None = Field(default=None, description="Celery broker URL; default embedded SQLite under data_dir")
    gpu_queue: str = "radtrace.gpu"
    dispatch_queue: str = "radtrace.dispatch"
    visibility_timeout_s: int = Field(default=3600, ge=60)
    reconcile_interval_s: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=20)


class ModelSettings(_Section):
    """Which reasoning VLM reads the images, where its weights are, and how it generates."""

    profile: Literal["nv-reason-cxr", "deepmedix-r1"] = "nv-reason-cxr"
    backend: Literal["transformers", "vllm", "onnxruntime"] = "transformers"
    path: Path | None = Field(default=None, description="local directory with the weights")
    repo_id: str = Field(default="nvidia/NV-Reason-CXR-3B", description="looked up in the local HF cache only")
    revision: str | None = None
    allow_download: bool = Field(default=False, description="never download at run time unless explicitly allowed")
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    max_new_tokens: int = Field(default=2048, ge=1, le=32768)
    min_pixels: int = Field(default=128 * 128, ge=28 * 28)
    max_pixels: int = Field(default=476 * 476, ge=28 * 28)
    batch_size: int = Field(default=1, ge=1, le=64)
    vllm_url: str | None = None
    vllm_api_key: SecretStr | None = None
    request_timeout_s: float = Field(default=300.0, gt=0)

    @model_validator(mode="after")
    def _pixels(self) -> ModelSettings:
        if self.min_pixels > self.max_pixels:
            raise ValueError("min_pixels must not exceed max_pixels")
        if self.backend == "vllm" and not self.vllm_url:
            raise ValueError("backend 'vllm' needs vllm_url")
        return self


class ReportingSettings(_Section):
    """How drafts are written: SR flavour, HL7 identities and result status, FHIR status."""

    sr_flavour: Literal["comprehensive-3d", "comprehensive"] = "comprehensive-3d"
    institution_name: str = "radtrace"
    hl7_result_status: Literal["P", "R"] = Field(
        default="P", description="P (preliminary) or R (unverified); F (final) is never allowed for a draft"
    )
    sending_application: str = "RADTRACE"
    sending_facility: str = "RADTRACE"
    receiving_application: str = "RIS"
    receiving_facility: str = "HOSPITAL"
    fhir_status: Literal["preliminary", "registered", "partial"] = "preliminary"

    @field_validator("hl7_result_status", mode="before")
    @classmethod
    def _never_final(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().upper() == "F":
            raise ValueError("'F' (final) is refused: radtrace reports are unverified drafts")
        return value


class DicomDestination(_Section):
    """A PACS (or other archive) that receives the SR by C-STORE."""

    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    tls: bool = False

    _ae = field_validator("ae_title")(_check_ae_title)


class MllpDestination(_Section):
    """A RIS interface engine receiving the HL7 ORU over MLLP."""

    host: str
    port: int = Field(ge=1, le=65535)
    timeout_s: float = Field(default=30.0, gt=0)


class DispatchSettings(_Section):
    """Where finished drafts go and how hard radtrace tries."""

    calling_ae_title: str = "RADTRACE"
    pacs: list[DicomDestination] = Field(default_factory=list)
    ris: MllpDestination | None = None
    file_drop_dir: Path | None = None
    max_attempts: int = Field(default=8, ge=1, le=100)
    backoff_initial_s: float = Field(default=5.0, gt=0)
    backoff_max_s: float = Field(default=600.0, gt=0)

    _ae = field_validator("calling_ae_title")(_check_ae_title)


class AuditSettings(_Section):
    """The audit log's checkpoint signing key and where checkpoints are written."""

    checkpoint_key: SecretStr | None = Field(
        default=None,
        description="HMAC key for signed checkpoints; required by 'audit checkpoint', no default",
    )
    checkpoint_dir: Path | None = None


class ApiSettings(_Section):
    """The read-only QA HTTP API."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    bootstrap_admin_token: SecretStr | None = Field(
        default=None, description="creates an admin token at first start when set; no default"
    )


class LoggingSettings(_Section):
    """Log format and level; handlers are configured only by entry points."""

    format: Literal["text", "json"] = "text"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_settings` and pass it down explicitly."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    data_dir: Path = Field(default=Path("var"), description="spool, SQLite files and caches live under here")
    listener: ListenerSettings = Field(default_factory=ListenerSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    reporting: ReportingSettings = Field(default_factory=ReportingSettings)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    # --- derived locations (embedded defaults) -----------------------------------------------
    @property
    def spool_dir(self) -> Path:
        """Where accepted instances are written: ``<data_dir>/spool/<study>/<sop>.dcm``."""
        return self.data_dir / "spool"

    @property
    def quarantine_dir(self) -> Path:
        """Where unparsable or refused input is kept for inspection."""
        return self.data_dir / "quarantine"

    @property
    def store_url(self) -> str:
        """The work database URL: the setting, or SQLite under ``data_dir``."""
        return self.store.url or f"sqlite:///{(self.data_dir / 'radtrace.db').resolve()}"

    @property
    def broker_url(self) -> str:
        """The Celery broker URL: the setting, or the embedded SQLite broker under ``data_dir``."""
        return self.broker.url or f"sqla+sqlite:///{(self.data_dir / 'broker.db').resolve()}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # No .env file: configuration comes from the environment or an explicit --config file.
        return (init_settings, env_settings, file_secret_settings)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from overrides, ``RADTRACE_*`` variables and an optional TOML file.

    Raises :class:`ConfigError` naming each invalid setting (and its environment variable) instead
    of pydantic's raw error, so the operator sees ``listener.port`` rather than a traceback.
    """
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist or is not a file")

    class _FromFile(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if config_file is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
            return (*sources, file_secret_settings)

    try:
        loaded = _FromFile(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc)) from exc
    except ValueError as exc:  # e.g. malformed TOML or an env value that is not valid JSON
        raise ConfigError(f"invalid configuration: {exc}") from exc
    return loaded


def _describe_validation_error(exc: ValidationError) -> str:
    lines = ["invalid configuration:"]
    for error in exc.errors():
        dotted = ".".join(str(part) for part in error["loc"])
        top_level = [str(part) for part in error["loc"] if isinstance(part, str)]
        env_name = ENV_PREFIX + ENV_NESTED_DELIMITER.join(top_level).upper()
        given = error.get("input")
        shown = "" if isinstance(given, dict) or error["type"] == "missing" else f" (got {given!r})"
        lines.append(f"  {dotted}: {error['msg']}{shown} [env {env_name}]")
    return "\n".join(lines)


_URL_PASSWORD = re.compile(r"(?P<head>[a-z0-9+.-]+://[^:/@]*:)(?P<password>[^@]*)(?P<tail>@)", re.IGNORECASE)


def _mask_url_password(value: str) -> str:
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}***{m['tail']}", value)


def masked_settings(settings: Settings) -> dict[str, Any]:
    """The effective configuration as plain data, with secrets and URL passwords masked."""
    dumped = settings.model_dump(mode="json")  # SecretStr fields dump as '**********'
    dumped["store"]["effective_url"] = settings.store_url
    dumped["broker"]["effective_url"] = settings.broker_url
    dumped["spool_dir"] = str(settings.spool_dir)
    dumped["quarantine_dir"] = str(settings.quarantine_dir)
    masked: dict[str, Any] = _mask_urls(dumped)
    return masked


def _mask_urls(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _mask_urls(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_mask_urls(value) for value in node]
    if isinstance(node, str):
        return _mask_url_password(node)
    return node
