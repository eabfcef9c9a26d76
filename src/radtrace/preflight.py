"""Start-up checks shared by every long-running radtrace service.

Each check is a plain value; the CLI prints them and refuses to start on a failed *required* one.
A missing model is a warning here (the listener and dispatcher run without it); the worker treats
it as fatal.
"""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from radtrace.config import Settings, unread_dotenv
from radtrace.errors import ModelServerError, RadtraceError
from radtrace.ports import bound_socket

if TYPE_CHECKING:
    from radtrace.store.engine import Store

__all__ = [
    "Check",
    "api_bind_problem",
    "bind_api_socket",
    "bind_problem",
    "check_model_weights",
    "check_ports",
    "data_dir_problem",
    "failed_checks",
    "for_serve",
    "listener_port_problem",
    "metrics_port_problem",
    "metrics_ports",
    "run_preflight",
    "store_problem",
]


@dataclass(frozen=True)
class Check:
    """The outcome of one start-up check."""

    name: str
    status: Literal["ok", "warning", "failed"]
    detail: str
    config_error: bool = False
    """A failure the configuration must change for (a port another program holds): exit 2, not 1."""


def data_dir_problem(data_dir: Path, *, create: bool = False) -> str | None:
    """Why this user cannot use the data directory (another user's, or read-only here), or ``None``.

    The night-shift case: the service runs as its own user (or was first started with sudo) and a command is run
    as someone else; without this it ended in a PermissionError traceback or "unable to open database file".
    A data directory that does not exist is no problem here unless ``create`` (then its parent must be writable).
    """
    target = data_dir.absolute()
    stray = next((part for part in target.parts if part != part.strip()), None)
    if stray is not None:  # ' /srv/radtrace' (a space after '=') became <current folder>/ /srv/radtrace
        return (
            f"data directory {str(target)!r} has a folder name beginning or ending with a space ({stray!r}): "
            "remove the stray space from RADTRACE_DATA_DIR (or data_dir in the config file)"
        )
    path, needed = target, os.R_OK | os.W_OK | os.X_OK
    while True:
        try:
            path.stat()
        except FileNotFoundError:
            if path.parent == path or not create:
                return None
            path, needed = path.parent, os.W_OK | os.X_OK
            continue
        except PermissionError:  # inside a folder this user may not search
            path, needed = path.parent, os.X_OK
            continue
        except OSError:
            return None
        break
    if path == target and not path.is_dir():
        return f"data directory {target} is not a directory: point RADTRACE_DATA_DIR (data_dir) at a directory"
    blocked = None if os.access(path, needed) else path
    database = target / "radtrace.db"
    if blocked is None and path == target and os.access(database, os.F_OK):
        blocked = None if os.access(database, os.R_OK | os.W_OK) else database
    if blocked is None:
        return None
    if _read_only(blocked):  # os.access says no for a read-only mount too: the owner is not what is wrong
        return (
            f"data directory {target} is on a read-only file system ({blocked}): remount it read-write, or point "
            "RADTRACE_DATA_DIR (data_dir) at a writable directory"
        )
    status = blocked.stat()
    owner, user = _user_name(status.st_uid), _user_name(os.geteuid())
    return (
        f"user {user} may not use data directory {target}: {blocked} belongs to {owner} "
        f"({stat.filemode(status.st_mode)}); run radtrace as {owner}, the user the service runs as "
        f"(sudo -u {owner} ...), or point RADTRACE_DATA_DIR (data_dir) at a directory {user} owns"
    )


def _read_only(path: Path) -> bool:
    """Whether ``path`` is on a file system mounted read-only."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _writable_directory(name: str, directory: Path) -> Check:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".radtrace-write-probe"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        return Check(name, "failed", f"{directory}: {exc.strerror or exc}")
    return Check(name, "ok", str(directory.resolve()))


def _free_space(settings: Settings) -> Check:
    try:
        free = shutil.disk_usage(settings.data_dir).free
    except OSError as exc:
        return Check("free disk space", "failed", f"{settings.data_dir}: {exc.strerror or exc}")
    need = settings.listener.min_free_bytes
    if free >= need:
        return Check("free disk space", "ok", f"{_size(free)} free; listener.min_free_bytes is {_size(need)}")
    return Check(
        "free disk space",
        "failed",
        f"{_size(free)} free where {settings.data_dir} is, below listener.min_free_bytes ({_size(need)}): free "
        "space there, put data_dir on a larger disk (RADTRACE_DATA_DIR), or lower the limit "
        "(RADTRACE_LISTENER__MIN_FREE_BYTES; below it the listener refuses studies)",
    )  # not a configuration error for listen and worker: under systemd they are restarted until space is freed


def _size(count: int) -> str:
    return f"{count / 1024**3:.1f} GiB" if count >= 1024**3 else f"{count / 1024**2:.0f} MiB"


#: The start-up check of a vLLM server (``GET /health``, then ``GET /v1/models``; connect, headers, bodies), and then
#: its one-token completion, each end within this: a server that drips its answers cannot hold the start of serve,
#: listen or worker, or serve's supervisor, longer than twice this (a model list is read up to the client's 8 MiB
#: cap, a health answer and a one-token completion up to 64 KiB).
MODEL_SERVER_CHECK_S = 3.0


def _vllm_server(settings: Settings) -> Check:
    """A vLLM backend needs its server to serve, not weights on this machine: its health check, as the worker's
    circuit breaker asks it (``GET /health``: 2xx up, 429 or 5xx down, any other answer falls back to the model list),
    then its model list, to name what it serves. Asked through the client's bounded requests
    (:func:`radtrace.model.backends.vllm.serving_models`): one deadline for both, a size cap.

    A vLLM whose engine died while its API process lives still lists its models but answers 5xx to ``/health``:
    before, this check asked only the model list and passed it. A *wedged* engine (a GPU hang, a stuck scheduler)
    answers both and completes nothing: the served model is then asked for one token of one tiny picture, as the
    worker's breaker asks a suspect server (:func:`radtrace.model.backends.vllm.completion_problem`), under its own
    deadline of :data:`MODEL_SERVER_CHECK_S`; no answer, 429/5xx or an empty one is a warning (serve's supervisor
    starts the GPU worker once it completes)."""
    from radtrace.model.backends.vllm import completion_problem, serving_models
    from radtrace.model.profiles import get_profile
    from radtrace.model.reader import effective_budget

    url = (settings.model.vllm_url or "").rstrip("/")
    key = settings.model.vllm_api_key
    try:
        served = serving_models(
            url, api_key=key.get_secret_value() if key is not None else None, timeout_s=MODEL_SERVER_CHECK_S
        )
    except ModelServerError as exc:  # answered 429 or 5xx, or not in time
        return Check("model server", "warning", f"{exc.reason}; inference waits until it serves (model.vllm_url)")
    except RadtraceError as exc:
        return Check("model server", "warning", f"vLLM at {settings.model.vllm_url} does not answer as a model server "
                     f"({exc.reason}); inference waits for it (model.vllm_url)")  # fmt: skip
    model = settings.model.vllm_model or (served[0] if len(served) == 1 else None)
    if model is not None:  # several served and none chosen: the worker refuses to guess, and says so at its read
        budget = effective_budget(settings.model, get_profile(settings.model.profile))
        problem = completion_problem(url, model=model, min_pixels=budget.min_pixels, max_pixels=budget.max_pixels,
                                     api_key=key.get_secret_value() if key is not None else None,
                                     timeout_s=MODEL_SERVER_CHECK_S)  # fmt: skip
        if problem is not None:
            return Check("model server", "warning", f"{problem}; inference waits until it reads (model.vllm_url)")
    return Check("model server", "ok", f"vLLM at {settings.model.vllm_url} serves {', '.join(served) or 'no model'}")


def check_model_weights(settings: Settings) -> Check:
    """Whether the configured backend can read: ``ok``, or a ``warning`` saying what is missing.

    transformers needs the weights here; ONNX Runtime an export (its manifest and files); vLLM a server that answers;
    the demo backend nothing.
    """
    if settings.model.backend == "demo":
        return Check("model", "ok", "DEMO: recorded model texts replayed; every draft is marked as a demo")
    if settings.model.backend == "vllm":
        return _vllm_server(settings)
    if settings.model.backend == "onnxruntime":
        return _onnx_export(settings)
    path = settings.model.path
    if path is not None:
        if not path.is_dir():
            tilde = " ('~' is not expanded inside quotes: write the whole path)" if str(path).startswith("~") else ""
            return Check("model weights", "warning", f"model.path {path} does not exist (RADTRACE_MODEL__PATH){tilde}")
        from radtrace.model.loading import checkpoint_problem, missing_checkpoint_files

        if missing := missing_checkpoint_files(path):
            return Check("model weights", "warning", f"model.path {path} lacks {', '.join(missing)}; the GPU worker "
                         "cannot load it and is restarted until it can (RADTRACE_MODEL__PATH)")  # fmt: skip
        if (problem := checkpoint_problem(path)) is not None:
            return Check("model weights", "warning", f"model.path {path} cannot be loaded: {problem}; inference waits "
                         "until the files there change (RADTRACE_MODEL__PATH)")  # fmt: skip
        return Check("model weights", "ok", f"{path}")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(settings.model.repo_id, "config.json", revision=settings.model.revision)
    if isinstance(cached, str):
        return Check("model weights", "ok", f"{settings.model.repo_id} in the local Hugging Face cache")
    return Check(
        "model weights",
        "warning",
        f"{settings.model.repo_id} is not in the local cache and model.path is not set; "
        "inference will not start until the weights are provided",
    )


def _onnx_export(settings: Settings) -> Check:
    """ONNX Runtime reads the export at ``model.path``: its manifest and the files it names (not hashed here; the
    worker does that when it loads). An export carries no transformers weights, so the transformers check said a
    good export 'lacks model.safetensors', and serve never started its worker."""
    from radtrace.errors import ModelFilesError, ModelLoadError
    from radtrace.model.onnx.manifest import read_manifest

    path = settings.model.path
    if path is None:  # refused by the settings already; said plainly should that change
        return Check("model weights", "warning", "model.path is not set (RADTRACE_MODEL__PATH)")
    try:
        read_manifest(path, verify=False)
    except ModelFilesError as exc:
        return Check("model weights", "warning", f"model.path {path} cannot be loaded: {exc.reason}; inference "
                     "waits until the files there change (RADTRACE_MODEL__PATH)")  # fmt: skip
    except ModelLoadError as exc:
        return Check("model weights", "warning", exc.reason)
    return Check("model weights", "ok", f"ONNX export {path}")


# libpq's words for a store.url that names a database, user, password or host that is not there: a setting to
# correct (exit 2). Anything else that keeps the database from answering (refused, timed out) is a server that is
# down (exit 1, as the README's exit codes say).
_WRONG_URL_WORDS = (
    "does not exist", "password authentication failed", "no password supplied", "failed to resolve host",
    "Name or service not known", "no pg_hba.conf entry", "Peer authentication failed", "invalid dsn",
    "invalid connection option", "unsupported database",
)  # fmt: skip


def store_problem(settings: Settings, exc: RadtraceError) -> tuple[str, bool]:
    """What went wrong reaching the work database, with the setting and its (masked) value, and whether it is the
    setting that must change (True: exit 2) rather than a server to start."""
    from radtrace.config_reference import masked_settings
    from radtrace.errors import ConfigError

    shown = masked_settings(settings)["store"]["effective_url"]
    reason = exc.reason
    if isinstance(exc, ConfigError) or any(words in reason for words in _WRONG_URL_WORDS):
        spelled = (
            " (PostgreSQL is written postgresql+psycopg://USER@HOST:5432/DATABASE)" if "'postgres'" in reason else ""
        )
        return f"{reason}; correct store.url (RADTRACE_STORE__URL), now {shown}{spelled}", True
    return f"{reason}; is the database server running? store.url (RADTRACE_STORE__URL) is {shown}", False


def _database(settings: Settings) -> Check:
    """The work database is reachable and at the newest schema; the embedded SQLite one is migrated here (an older
    one after a copy is kept beside it: :func:`radtrace.store.migrate.migrate_at_start`). A database a newer radtrace
    migrated is refused on either store, saying so (before: alembic's "Can't locate revision" traceback on SQLite,
    "run 'radtrace db upgrade'" on PostgreSQL, which cannot help)."""
    from radtrace.store.engine import Store, is_sqlite
    from radtrace.store.migrate import (
        StartMigrationError,
        current_revision,
        head_revision,
        migrate_at_start,
        newer_schema_problem,
    )

    try:
        store = Store.from_url(settings.store_url, connect_timeout_s=settings.store.connect_timeout_s)
    except RadtraceError as exc:
        return _database_failed(settings, exc)
    try:
        if is_sqlite(store.engine):
            migrated = migrate_at_start(store)
            return _after_upgrade(settings, store) or Check(
                "database", "ok", f"SQLite {migrated.describe()} ({store.engine.url.database})"
            )
        current, head = current_revision(store), head_revision()
        if (newer := newer_schema_problem(current)) is not None:
            return Check("database", "failed", newer)
        if current != head:
            return Check("database", "failed", f"schema {current or 'empty'}, newest {head}: run 'radtrace db upgrade'")
        return Check("database", "ok", f"{store.engine.url.get_backend_name()} at schema {current}")
    except StartMigrationError as exc:  # not a server to start nor a store.url to correct: the words say what to do
        return Check("database", "failed", exc.reason)
    except RadtraceError as exc:
        return _database_failed(settings, exc)
    finally:
        store.dispose()


def _after_upgrade(settings: Settings, store: Store) -> Check | None:
    """Record the tokens and accounts from before credentials were bound to the audit log, as ``radtrace db
    upgrade`` does; a warning when one stays refused, None when all is well."""
    from radtrace.audit.checkpoints import CheckpointSource
    from radtrace.audit.operations import ChainNotVerifiedError, local_operator
    from radtrace.audit.rebind import rebind_after_upgrade

    try:
        done = rebind_after_upgrade(store, local_operator(), CheckpointSource.for_settings(settings))
    except ChainNotVerifiedError as exc:
        return Check("database", "warning", f"tokens and accounts from before this version stay refused: {exc.reason}")
    refused = [item.name for item in done if item.outcome == "refused"]
    if refused:
        return Check("database", "warning", f"{len(refused)} token(s) or account(s) are not as the audit log recorded "
                     "them and stay refused: 'radtrace audit rebind' names each")  # fmt: skip
    return None


def _database_failed(settings: Settings, exc: RadtraceError) -> Check:
    detail, wrong_url = store_problem(settings, exc)
    return Check("database", "failed", detail, config_error=wrong_url)


def _embedded_broker(settings: Settings) -> Check | None:
    """Create the embedded broker's tables once, here: children creating them at the same moment race
    ("table kombu_queue already exists") and a worker then reports its broker connection lost."""
    from radtrace.worker.app import create_app, is_embedded_broker

    if not is_embedded_broker(settings):
        return None
    problem = ""
    for _attempt in range(3):  # processes started together (systemd units) may still race here: try again
        try:
            with create_app(settings, with_tasks=False).connection_for_write() as connection:
                connection.ensure_connection(max_retries=1)
                _ = connection.default_channel.session  # creates the kombu tables
        except Exception as exc:  # kombu and SQLAlchemy raise many types; the check only reports
            problem = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
            continue
        return Check("embedded broker", "ok", settings.broker_url.removeprefix("sqla+sqlite:///"))
    return Check("embedded broker", "failed", f"{settings.broker_url}: {problem}")


def bind_api_socket(settings: Settings) -> socket.socket:
    """A TCP socket bound to ``api.host``:``api.port`` with the options uvicorn binds with (not yet listening);
    ``OSError`` when the address cannot be bound (see :func:`api_bind_problem`)."""
    return bound_socket(settings.api.host, settings.api.port)


def _api_port_free(settings: Settings) -> Check:
    """The QA API's address can be bound, as ``radtrace api`` will bind it."""
    host, port = settings.api.host, settings.api.port
    try:
        bind_api_socket(settings).close()
    except OSError as exc:
        return Check("QA API port", "failed", api_bind_problem(host, port, exc), config_error=True)
    return Check("QA API port", "ok", f"{host}:{port}")


def api_bind_problem(host: str, port: int, exc: OSError) -> str:
    """Why the QA API cannot listen on ``host:port``, naming the settings to change."""
    return bind_problem(host, port, "api.port, RADTRACE_API__PORT", exc)


def bind_problem(host: str, port: int, setting: str, exc: OSError) -> str:
    """Why ``host:port`` cannot be listened on, naming ``setting`` (the setting and its variable) to change."""
    if exc.errno == errno.EADDRINUSE:
        return (
            f"port {port} on {host} is already in use by another program ({setting}): choose a free port or stop "
            "that program"
        )
    if exc.errno == errno.EACCES:
        return f"port {port} needs privileges this user lacks ({setting}): use a port above 1023"
    return f"cannot listen on {host}:{port} ({setting}): {exc.strerror or exc}"


def metrics_ports(settings: Settings) -> list[tuple[int, str]]:
    """Each metrics port ``serve``'s children bind, with the setting that gives it: the listener's (one per listener
    process), the worker's (``broker.metrics_port``) and the dispatcher's (the next one), the ATNA forwarder's."""
    ports: list[tuple[int, str]] = []
    listener, worker = settings.listener.metrics_port, settings.broker.metrics_port
    if listener is not None:
        for index in range(settings.listener.processes):
            plus = f" + {index} (listener process {index})" if settings.listener.processes > 1 else ""
            ports.append((listener + index, f"listener.metrics_port{plus}, RADTRACE_LISTENER__METRICS_PORT"))
    if worker is not None:
        ports.append((worker, "broker.metrics_port (the worker's), RADTRACE_BROKER__METRICS_PORT"))
        ports.append((worker + 1, "broker.metrics_port + 1 (the dispatcher's), RADTRACE_BROKER__METRICS_PORT"))
    if settings.atna.enabled and settings.atna.metrics_port is not None:
        ports.append((settings.atna.metrics_port, "atna.metrics_port, RADTRACE_ATNA__METRICS_PORT"))
    return ports


def _metrics_ports_free(settings: Settings) -> Check | None:
    """Every metrics port serve's children will bind can be bound (None: no metrics port is set). Before, a metrics
    port another program held was found by the child itself, an OSError traceback, and the child was restarted for
    ever."""
    ports = metrics_ports(settings)
    if not ports:
        return None
    if (problem := metrics_port_problem(settings, ports)) is not None:
        return Check("metrics ports", "failed", problem, config_error=True)
    host = settings.listener.metrics_bind_host
    return Check("metrics ports", "ok", ", ".join(f"{host}:{port}" for port, _ in ports))


def metrics_port_problem(settings: Settings, ports: list[tuple[int, str]]) -> str | None:
    """Why one of ``ports`` (port, setting) cannot be bound on ``listener.metrics_bind_host`` as the metrics server
    binds it, naming its setting (:func:`bind_problem`), or None."""
    host = settings.listener.metrics_bind_host
    for port, setting in ports:
        try:
            bound_socket(host, port).close()  # as http.server binds (SO_REUSEADDR)
        except OSError as exc:
            return bind_problem(host, port, setting, exc)
    return None


def for_serve(checks: list[Check]) -> list[Check]:
    """The checks as ``serve`` must judge them: it is started by hand, so what a systemd unit waits out (a disk
    below the limit, an external broker that does not answer) is a mistake to correct before starting (exit 2).

    Before, serve started with a broker.url that answered nothing (a typo, Redis not started) and its workers
    logged Celery's reconnect errors every few seconds, and a full disk was exit 1 with no remedy.
    """
    judged = []
    for check in checks:
        if check.name == "free disk space" and check.status == "failed":
            check = Check(check.name, "failed", check.detail, config_error=True)
        elif check.name == "broker" and check.status == "warning":
            detail = check.detail.split("; studies are received", 1)[0]
            check = Check(
                "broker", "failed", f"{detail}: start it, correct broker.url (RADTRACE_BROKER__URL), or unset "
                "broker.url for the embedded broker (one machine)", config_error=True,
            )  # fmt: skip
        judged.append(check)
    return judged


def listener_port_problem(settings: Settings) -> str | None:
    """Why this user may not listen on ``listener.port`` or ``listener.plain_port`` at all (a port below 1024 without
    the privilege), or None.

    Only privilege is judged here: a port in use is left to ``radtrace listen``'s locks, which say who holds it.
    """
    from radtrace.listener_lock import listener_ports

    host = settings.listener.host or "0.0.0.0"  # noqa: S104
    for port, setting in listener_ports(settings):
        try:
            bound_socket(host, port).close()
        except OSError as exc:
            if exc.errno == errno.EACCES:
                return (
                    f"port {port} needs privileges this user lacks ({setting}): use a port above 1023 and tell the "
                    "PACS, or give the service CAP_NET_BIND_SERVICE (AmbientCapabilities= in its systemd unit)"
                )
    return None


def check_ports(settings: Settings) -> list[Check]:
    """For ``serve``: every port its children will listen on is free, so that serve refuses before it starts any
    child: the DICOM ports (the listener's locks, as ``radtrace listen`` takes them), the QA API's and the metrics
    ports when set."""
    from radtrace.listener_lock import listener_ports

    problem = listener_port_problem(settings) or _listener_lock_problem(settings)
    listener = (
        Check("DICOM port", "ok", ", ".join(f"{settings.listener.host}:{port}" for port, _ in listener_ports(settings)))
        if problem is None
        else Check("DICOM port", "failed", problem, config_error=True)
    )
    metrics = _metrics_ports_free(settings)
    return [listener, _api_port_free(settings), *([metrics] if metrics is not None else [])]


def _listener_lock_problem(settings: Settings) -> str | None:
    """Why ``radtrace listen`` would refuse its ports or data directory (:func:`radtrace.listener_lock.listener_locks`):
    another radtrace listener holds them (a ``make run`` still running in another terminal), said with its pid rather
    than as "QA API port 8080 is in use by another program" (the other serve's API); or another program accepts
    connections on a DICOM port. Before, that program's port was left to the listener: the table said "DICOM port
    ok", serve printed what next (its wait for the listener was answered by that program), then stopped."""
    from radtrace.listener_lock import ListenerLockError, listener_locks

    try:
        with listener_locks(settings):
            return None
    except ListenerLockError as exc:
        return exc.reason


def _external_broker(settings: Settings) -> Check:
    """A Redis (or other external) broker answers. Only a warning: the database is the record and the broker a
    doorbell, so studies are still received and the reconciler rings for them once it answers; but a mistyped
    broker.url should be said at start, not only in the workers' reconnect lines."""
    from radtrace.config_reference import masked_settings
    from radtrace.worker.app import create_app

    shown = masked_settings(settings)["broker"]["effective_url"]
    try:
        with create_app(settings, with_tasks=False).connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=3)
    except Exception as exc:  # kombu and redis-py raise many types; the check only reports
        return Check(
            "broker",
            "warning",
            f"{shown} does not answer ({exc}); studies are received and wait until it does "
            "(broker.url, RADTRACE_BROKER__URL)",
        )
    return Check("broker", "ok", shown)


def run_preflight(settings: Settings) -> list[Check]:
    """Run every start-up check, creating the data directories on the way."""
    dotenv = unread_dotenv(Path.cwd(), os.environ)
    checks = [Check("settings", "ok", "loaded and valid") if dotenv is None else Check("settings", "warning", dotenv)]
    problem = data_dir_problem(settings.data_dir, create=True)
    if problem is not None:  # every other check would fail on it too: say it once, with what to change
        return [*checks, Check("data directory", "failed", problem, config_error=True)]
    checks += [
        _writable_directory("data directory", settings.data_dir),
        _writable_directory("spool", settings.spool_dir),
        _writable_directory("quarantine", settings.quarantine_dir),
    ]
    checks += [_free_space(settings), _database(settings)]
    checks.append(_embedded_broker(settings) or _external_broker(settings))
    checks.append(check_model_weights(settings))
    return checks


def failed_checks(checks: list[Check]) -> list[Check]:
    """The checks that must stop a service from starting."""
    return [check for check in checks if check.status == "failed"]
