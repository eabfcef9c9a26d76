"""What every ``radtrace`` command shares: the Typer apps, the root options, consoles, exit codes, the store.

Exit codes (the README's table): 0 success, 1 the work failed (a study, a delivery, a check), 2 bad usage or
configuration (including a port or data directory another radtrace already holds).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, Union, get_args, get_origin

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn

from radtrace import __version__
from radtrace.cli.interrupt import hand_over
from radtrace.config import LoggingSettings, Settings, load_settings
from radtrace.errors import ConfigError, RadtraceError, StoreUnavailableError
from radtrace.logging import configure_logging

if TYPE_CHECKING:
    from radtrace.store.engine import Store

__all__ = [
    "EXIT_FAILED",
    "EXIT_USAGE",
    "app",
    "audit_app",
    "config_app",
    "db_app",
    "err",
    "fail",
    "flatten",
    "json_variable_problem",
    "model_app",
    "open_store",
    "out",
    "refuse_foreign_data_dir",
    "refuse_missing_database",
    "row_progress",
    "settings_of",
    "token_app",
]

log = logging.getLogger(__name__)
out = Console()
err = Console(stderr=True, soft_wrap=True)

EXIT_FAILED = 1
EXIT_USAGE = 2
LOG_FORMATS: tuple[str, ...] = get_args(LoggingSettings.model_fields["format"].annotation)
LOG_LEVELS: tuple[str, ...] = get_args(LoggingSettings.model_fields["level"].annotation)

app = typer.Typer(
    name="radtrace",
    help="Draft chest X-ray reports from a reasoning VLM, with an immutable audit trail.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
config_app = typer.Typer(help="Show and check the configuration.", no_args_is_help=True)
audit_app = typer.Typer(help="Verify and query the audit log.", no_args_is_help=True)
model_app = typer.Typer(help="Inspect, build and run models.", no_args_is_help=True)
db_app = typer.Typer(help="Create and migrate the work database.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(audit_app, name="audit")
app.add_typer(model_app, name="model")
app.add_typer(db_app, name="db")
token_app = typer.Typer(help="Create, list and revoke QA API tokens.", no_args_is_help=True)
audit_app.add_typer(token_app, name="token")


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print ``message`` on stderr and exit with ``code``."""
    err.print(f"[bold red]radtrace:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def settings_of(ctx: typer.Context) -> Settings:
    """The settings the root callback loaded."""
    settings = ctx.find_root().obj
    if not isinstance(settings, Settings):  # pragma: no cover - the callback always sets it
        raise RuntimeError("settings were not loaded")
    return settings


def _version(value: bool) -> None:
    if value:
        out.print(f"radtrace {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="TOML settings file (RADTRACE_* variables override it)."),
    ] = None,
    log_format: Annotated[str | None, typer.Option(help="text or json (overrides logging.format).")] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    started_by_serve: Annotated[
        bool, typer.Option("--started-by-serve", hidden=True, help="serve's children: serve said the warnings.")
    ] = False,
) -> None:
    # Checked here: a bad value passed on as a setting would be blamed on RADTRACE_LOGGING__*, which is not set.
    if log_format is not None and log_format not in LOG_FORMATS:
        fail(f"--log-format must be {' or '.join(LOG_FORMATS)} (got {log_format!r})", EXIT_USAGE)
    if log_level is not None and log_level.upper() not in LOG_LEVELS:
        fail(f"--log-level must be one of {', '.join(LOG_LEVELS)} (got {log_level!r})", EXIT_USAGE)
    overrides: dict[str, Any] = {}
    if log_format or log_level:
        overrides["logging"] = {
            key: value for key, value in (("format", log_format), ("level", log_level and log_level.upper())) if value
        }
    try:
        settings = load_settings(config, **overrides)
    except ConfigError as exc:
        if "EnvSettingsSource" in str(exc) and (problem := json_variable_problem(os.environ)) is not None:
            fail(problem, EXIT_USAGE)
        if config is not None and _starts_with_bom(config):  # tomllib reads the mark as text: "Invalid statement"
            fail(f"config file {config} starts with a byte-order mark: save it as UTF-8 without BOM", EXIT_USAGE)
        fail(str(exc), EXIT_USAGE)
    except UnicodeDecodeError:  # tomllib decodes the file as UTF-8 and lets this through
        fail(f"config file {config} is not UTF-8 text: save it as UTF-8 (not UTF-16 or a legacy code page)", EXIT_USAGE)
    configure_logging(settings.logging.format, settings.logging.level)
    ctx.obj = settings
    if ctx.invoked_subcommand != "serve":  # serve keeps the start-up handler until its supervisor takes over
        hand_over()


def json_variable_problem(environ: Mapping[str, str]) -> str | None:
    """Which ``RADTRACE_*`` variable holding a list or table is not JSON, and how to write it, or None.

    pydantic-settings names only the section ('error parsing value for field "listener" from source
    "EnvSettingsSource"'); allowed_callers with single quotes inside, or a bare AE title, is the usual slip.
    """
    for name, value in sorted(environ.items()):
        path = name.upper().removeprefix("RADTRACE_").lower().split("__")
        if not name.upper().startswith("RADTRACE_") or not _is_structured(_annotation(Settings, path)):
            continue
        try:
            json.loads(value)
        except ValueError as exc:
            example = (
                """'[{"ae_title": "PACS01", "host": "10.1.2.0/24"}]'"""
                if path[-1] == "allowed_callers"
                else """'["CHEST", "THORAX"]'"""
            )
            why = f"{exc.msg} at character {exc.pos}" if isinstance(exc, json.JSONDecodeError) else str(exc)
            return (
                f"{name} is not valid JSON ({why}): a list or table in a variable is written in JSON, with double "
                f"quotes inside single ones, e.g. {name}={example}"
            )
    return None


def _annotation(model: Any, path: list[str]) -> Any:
    """The type of the setting at ``path`` (None when there is none)."""
    for part in path:
        fields = getattr(model, "model_fields", None)
        if not isinstance(fields, dict) or part not in fields:
            return None
        model = fields[part].annotation
    return model


def _is_structured(annotation: Any) -> bool:
    """A list, table or section: pydantic-settings reads such a variable as JSON."""
    if annotation is None:
        return False
    origin = get_origin(annotation)
    if origin in (list, dict, tuple, set, frozenset):
        return True
    if origin in (Union, UnionType):
        return any(_is_structured(arg) for arg in get_args(annotation) if arg is not type(None))
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _starts_with_bom(path: Path) -> bool:
    """Whether a file begins with the UTF-8 byte-order mark (Windows Notepad's "UTF-8 with BOM")."""
    try:
        with path.open("rb") as handle:
            return handle.read(3) == b"\xef\xbb\xbf"
    except OSError:
        return False


def flatten(node: Any, prefix: str = "") -> list[tuple[str, str]]:
    """A nested settings dump as (dotted name, shown value) rows."""
    if isinstance(node, dict) and node:
        rows: list[tuple[str, str]] = []
        for key, value in node.items():
            rows.extend(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return rows
    return [(prefix, json.dumps(node, ensure_ascii=False) if not isinstance(node, str) else node)]


def refuse_foreign_data_dir(settings: Settings, *, create: bool = False) -> None:
    """Exit 2, naming the owner and the settings, when this user may not use (or ``create``) the data directory."""
    from radtrace.preflight import data_dir_problem

    problem = data_dir_problem(settings.data_dir, create=create)
    if problem is not None:
        fail(problem, EXIT_USAGE)


#: Run on a host set up from deploy/ without RADTRACE_DATA_DIR, a command looks in ./var (the systemd units' data is
#: in /var/lib/radtrace, their settings in /etc/radtrace/radtrace.env, which a shell does not read).
DEPLOYED_DATA_DIR_HINT = (
    "; on a host set up from deploy/systemd it is /var/lib/radtrace, used as the service's user: sudo -u radtrace env "
    "RADTRACE_DATA_DIR=/var/lib/radtrace /opt/radtrace/venv/bin/radtrace ... (with any RADTRACE_STORE__URL and "
    "RADTRACE_BROKER__URL that /etc/radtrace/radtrace.env sets; docs/operations.md, Runbook)"
)


def refuse_missing_database(settings: Settings) -> None:
    """Exit 1, naming the data directory looked in, when the embedded SQLite database is not there (a command run
    from the wrong folder); nothing when it is, or when store.url names another database. Exit 2 when the data
    directory is another user's."""
    from radtrace.store.engine import is_sqlite

    if is_sqlite(settings.store_url) and not settings.store.url:
        refuse_foreign_data_dir(settings)
        database = settings.data_dir / "radtrace.db"
        if not database.is_file():
            deployed = "" if "RADTRACE_DATA_DIR" in os.environ else DEPLOYED_DATA_DIR_HINT
            fail(
                f"no radtrace database at {database.resolve()} (data_dir {settings.data_dir.resolve()}): "
                "start the service there first ('radtrace serve' or 'radtrace db upgrade'), or point "
                f"RADTRACE_DATA_DIR (or data_dir in the --config file) at the data directory in use{deployed}"
            )


@contextlib.contextmanager
def open_store(settings: Settings, *, create: bool = False, too_old_exit: int = EXIT_FAILED) -> Iterator[Store]:
    """The work database, with database errors turned into a clear message naming store.url: exit 1 (2 when it is
    store.url that must change: no such database, user or host, an unsupported scheme). A database this code may not
    work on (a newer radtrace raised its floor or migrated it) exits ``too_old_exit``: 2 for a service that systemd
    must not restart in a loop until this host's radtrace is upgraded (``radtrace audit forward``, ``radtrace api``;
    ``listen`` and ``worker`` are refused by their start-up checks, also with 2). One-shot commands keep 1: run by
    hand or by a timer (``radtrace audit checkpoint``), nothing restarts them, and 1 is "the work failed".

    An embedded SQLite database that does not exist is refused (exit 1, naming the data directory) unless
    ``create``: a command run from the wrong folder must not leave an empty database behind.
    """
    from radtrace.preflight import store_problem
    from radtrace.store.engine import Store

    if not create:
        refuse_missing_database(settings)
    elif not settings.store.url:  # the embedded database is created in the data directory
        refuse_foreign_data_dir(settings, create=True)
    store: Store | None = None
    try:
        try:
            store = Store.from_url(
                settings.store_url, pool_size=settings.store.pool_size,
                connect_timeout_s=settings.store.connect_timeout_s,
            )  # fmt: skip
        except ConfigError as exc:  # store.url itself (an unsupported scheme)
            fail(store_problem(settings, exc)[0], EXIT_USAGE)
        if not create:  # a newer radtrace raised the floor or migrated: this code may misread it (store.floor)
            from radtrace.store.floor import CodeTooOldError, refuse_too_old

            try:
                refuse_too_old(store)
            except CodeTooOldError as exc:
                fail(exc.reason, too_old_exit)
        yield store
    except StoreUnavailableError as exc:  # reaching the database, not the work: name the setting
        problem, wrong_url = store_problem(settings, exc)
        fail(problem, EXIT_USAGE if wrong_url else EXIT_FAILED)
    except RadtraceError as exc:
        fail(exc.reason, EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED)
    finally:
        if store is not None:
            store.dispose()


@contextlib.contextmanager
def row_progress(description: str) -> Iterator[Callable[[int], None]]:
    """A progress line on stderr counting rows, on a terminal only; yields the callback that advances it. Where
    stderr is a file, a pipe or the journal (cron, a systemd timer, a script), rich printed the line once at the
    end, spinner and all, with the count of its last refresh ("⠙ verifying audit chain 0 rows" after 7 rows)."""
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed:,} rows"),
        console=err,
        disable=not err.is_terminal,
    ) as progress:
        task = progress.add_task(description, total=None)
        yield lambda done: progress.update(task, completed=done)
