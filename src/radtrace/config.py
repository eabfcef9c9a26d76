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

import difflib
import functools
import os
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import UnionType
from typing import Any, ClassVar, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from radtrace.config_sections import (
    ApiSettings,
    AtnaSettings,
    AuditSettings,
    BrokerSettings,
    CallerRule,
    ConsoleSettings,
    DicomDestination,
    DispatchSettings,
    ListenerSettings,
    LoggingSettings,
    MllpDestination,
    ModelSettings,
    QaSettings,
    ReportingSettings,
    RoutingSettings,
    StoreSettings,
    TlsSettings,
    ae_title_problem,
)
from radtrace.errors import ConfigError

__all__ = [
    "ENV_NESTED_DELIMITER",
    "ENV_PREFIX",
    "NOT_SETTINGS",
    "NOT_SETTING_PREFIXES",
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
    "Settings",
    "StoreSettings",
    "TlsSettings",
    "ae_title_problem",
    "load_settings",
    "unread_dotenv",
]

ENV_PREFIX = "RADTRACE_"
ENV_NESTED_DELIMITER = "__"


class Settings(BaseSettings):
    """The whole configuration. Build it with :func:`load_settings` and pass it down explicitly."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_NESTED_DELIMITER,
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    _config_file: ClassVar[Path | None] = None

    data_dir: Path = Field(
        default=Path("var"),
        description="spool, SQLite files, drafts and caches live under here; a relative path is taken from the "
        "current directory once, at start",
    )
    listener: ListenerSettings = Field(default_factory=ListenerSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    broker: BrokerSettings = Field(default_factory=BrokerSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    reporting: ReportingSettings = Field(default_factory=ReportingSettings)
    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    atna: AtnaSettings = Field(default_factory=AtnaSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    qa: QaSettings = Field(default_factory=QaSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        # Resolved once: every child of 'serve' and every later command names the same folder.
        return value.expanduser().absolute()

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
        # No .env file: configuration comes from the environment or an explicit --config file, which
        # load_settings names by subclassing with _config_file set (the file is chosen at run time).
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._config_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._config_file))
        return (*sources, file_secret_settings)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from overrides, ``RADTRACE_*`` variables and an optional TOML file.

    Raises :class:`ConfigError` naming each invalid setting (and its environment variable) instead
    of pydantic's raw error, so the operator sees ``listener.port`` rather than a traceback.
    """
    if config_file is not None and not config_file.is_file():
        raise ConfigError(f"config file {config_file} does not exist or is not a file")
    _check_environment(os.environ)
    if config_file is not None:
        _check_config_file(config_file)
    from_file: type[Settings] = type("_FromFile", (Settings,), {"_config_file": config_file})

    try:
        loaded = from_file(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_error(exc, config_file)) from exc
    except ValueError as exc:  # e.g. malformed TOML or an env value that is not valid JSON
        raise ConfigError(f"invalid configuration: {exc}") from exc
    return loaded


def unread_dotenv(directory: Path, environ: Mapping[str, str]) -> str | None:
    """What to say about a ``.env`` file in ``directory`` that sets ``RADTRACE_*`` variables the environment does not
    hold (with those values), or None.

    radtrace reads settings from the environment and the ``--config`` file only (the systemd units name their env
    file, compose passes its ``.env`` as the containers' environment); a ``.env`` beside the command is not read, as
    docker compose would, and that was silent: a port or allowed caller written there had no effect. A file already
    loaded into the shell (``set -a; . ./.env``) says nothing."""
    path = directory / ".env"
    try:
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    except OSError:
        return None
    unread = []
    for line in text.splitlines():
        name, equals, value = line.strip().removeprefix("export ").partition("=")
        name, value = name.strip(), value.strip()
        if not equals or not name.upper().startswith(ENV_PREFIX):
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if environ.get(name) != value:
            unread.append(name)
    if not unread:
        return None
    shown = ", ".join(unread[:4]) + (f" and {len(unread) - 4} more" if len(unread) > 4 else "")
    return (
        f"{path} sets {shown}, but radtrace does not read .env files (settings come from the environment and "
        "--config only): these are not in effect. Load it into the shell first: set -a; . ./.env; set +a"
    )


#: RADTRACE_* variables that are not settings: build arguments of deploy/ and switches of bench/ and tests/.
NOT_SETTINGS = frozenset({
    "RADTRACE_CPU_IMAGE", "RADTRACE_GPU_IMAGE", "RADTRACE_WHEELS", "RADTRACE_FULL_ABLATION",
    "RADTRACE_ABLATION_SEED", "RADTRACE_GPU_STATIC_TIMEOUT", "RADTRACE_GPU_STATIC_ROW", "RADTRACE_GPU_BUDGET_S",
})  # fmt: skip
#: Prefixes of the switches of tests/ and bench/ (``RADTRACE_FULL_FUZZ``, ``RADTRACE_FUZZ_EXAMPLES``...): no section
#: of the settings starts so (a test checks), so a typo of a setting is still refused.
NOT_SETTING_PREFIXES = ("RADTRACE_FULL_", "RADTRACE_FUZZ_", "RADTRACE_ABLATION_", "RADTRACE_GPU_")


def _is_tool_switch(name: str) -> bool:
    return name in NOT_SETTINGS or name.startswith(NOT_SETTING_PREFIXES)


def _setting_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], bool]:
    """Every setting and section, as a path, mapped to whether it is a section (a model of its own)."""
    paths: dict[tuple[str, ...], bool] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        section = isinstance(annotation, type) and issubclass(annotation, BaseModel)
        paths[(*prefix, name)] = section
        if section:
            paths.update(_setting_paths(annotation, (*prefix, name)))  # type: ignore[arg-type]
    return paths


def _nearest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _check_environment(environ: Mapping[str, str]) -> None:
    """Refuse a ``RADTRACE_*`` variable that names no setting (a typo would otherwise be ignored silently)."""
    known = [ENV_PREFIX + ENV_NESTED_DELIMITER.join(path).upper() for path in _setting_paths(Settings)]
    unknown = [
        name for name in sorted(environ)
        if name.upper().startswith(ENV_PREFIX) and name.upper() not in known and not _is_tool_switch(name.upper())
    ]  # fmt: skip
    if unknown:
        lines = [f"  {name}: no such setting{_nearest(name.upper(), known)}" for name in unknown]
        raise ConfigError(
            "unknown environment variable(s) (RADTRACE_ + section + '__' + name, e.g. RADTRACE_LISTENER__PORT; "
            "'radtrace config reference' lists them all):\n" + "\n".join(lines)
        )


def _check_config_file(config_file: Path) -> None:
    """Refuse a config file that is not TOML or has a key that names no setting, naming the file."""
    try:
        with config_file.open("rb") as handle:
            document = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"config file {config_file} cannot be read: {exc.strerror or exc}") from exc
    paths = _setting_paths(Settings)
    known = [".".join(path) for path in paths]
    unknown: list[str] = []

    def walk(node: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
        for key, value in node.items():
            path = (*prefix, key)
            if path not in paths:
                unknown.append(".".join(path))
            elif paths[path] and isinstance(value, Mapping):
                walk(value, path)

    walk(document, ())
    if unknown:
        lines = [f"  {key}: no such setting{_nearest(key, known)}" for key in unknown]
        raise ConfigError(f"unknown key(s) in config file {config_file}:\n" + "\n".join(lines))


def _describe_validation_error(exc: ValidationError, config_file: Path | None = None) -> str:
    lines = ["invalid configuration:"]
    for error in exc.errors():
        dotted = ".".join(str(part) for part in error["loc"])
        env_name = environment_variable(error["loc"])
        given = error.get("input")
        shown = "" if isinstance(given, dict) or error["type"] == "missing" else f" (got {given!r})"
        message = error["msg"]
        if error["type"] == "extra_forbidden" and isinstance(error["loc"][-1], str):
            message = f"no such setting{_nearest(error['loc'][-1], _fields_at(error['loc'][:-1]))}"
        source = f"env {env_name}"
        if env_name not in {name.upper() for name in os.environ} and config_file is not None:
            source = f"config file {config_file}"
        lines.append(f"  {dotted}: {message}{shown} [{source}]")
    return "\n".join(lines)


def environment_variable(loc: Sequence[int | str]) -> str:
    """The ``RADTRACE_*`` variable that holds the setting at ``loc``: a list or table setting (``dispatch.pacs``,
    ``dispatch.ris``) is one variable in JSON, whatever inside it is wrong (not ``RADTRACE_DISPATCH__PACS__TLS``)."""
    paths = _setting_paths(Settings)
    parts: list[str] = []
    for part in loc:
        if not isinstance(part, str):
            break
        parts.append(part)
        if not paths.get(tuple(parts), False):  # a setting, not a section: its variable holds the rest
            break
    return ENV_PREFIX + ENV_NESTED_DELIMITER.join(parts).upper()


def _fields_at(loc: Sequence[int | str]) -> list[str]:
    """The keys the model at ``loc`` takes (a list item's model for an index, X for ``X | None``); [] if none."""
    node: Any = Settings
    for part in loc:
        node = _optional_of(node)
        if isinstance(part, int):
            node = get_args(node)[0] if get_origin(node) is list and get_args(node) else None
            continue
        fields = getattr(node, "model_fields", None)
        if not isinstance(fields, dict) or part not in fields:
            return []
        node = fields[part].annotation
    fields = getattr(_optional_of(node), "model_fields", None)
    return list(fields) if isinstance(fields, dict) else []


def _optional_of(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, UnionType):
        options = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(options) == 1:
            return options[0]
    return annotation


def setting_source(dotted: str, config_file: Path | None) -> str:
    """Where the value of the setting ``dotted`` (as ``radtrace config show`` lists it) comes from: ``env NAME``,
    ``config file PATH`` or ``default``. A file value that a variable overrides is named, since that edit has no
    effect (a RADTRACE_* left exported in the shell, or an Environment= line in a unit)."""
    parts = dotted.split(".")
    variable = environment_variable(parts)
    document = _toml_document(config_file)
    held = variable.removeprefix(ENV_PREFIX).lower().split(ENV_NESTED_DELIMITER)  # the setting the variable sets
    if variable in {name.upper() for name in os.environ}:
        shadowed = _lookup(document, parts)
        return f"env {variable}" + (
            f" (overrides {shadowed} in config file {config_file})" if shadowed is not None else ""
        )
    return f"config file {config_file}" if _lookup(document, held) is not None else "default"


def _lookup(document: Mapping[str, Any], path: Sequence[str]) -> Any:
    node: Any = document
    for part in path:
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


@functools.cache
def _toml_document(config_file: Path | None) -> Mapping[str, Any]:
    if config_file is None:
        return {}
    with config_file.open("rb") as handle:  # load_settings has read it already: it is TOML
        return tomllib.load(handle)
