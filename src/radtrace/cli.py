"""The ``radtrace`` command. Thin: parse arguments, load settings, call into the packages.

Exit codes: 0 success, 1 the work failed, 2 bad usage or configuration, 3 the command is not
available in this build.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table

from radtrace import __version__
from radtrace.config import Settings, load_settings, masked_settings, settings_reference
from radtrace.errors import ConfigError, RadtraceError
from radtrace.logging import configure_logging
from radtrace.preflight import failed_checks, run_preflight

if TYPE_CHECKING:
    from radtrace.store.engine import Store

__all__ = ["app", "main"]

log = logging.getLogger(__name__)
out = Console()
err = Console(stderr=True, soft_wrap=True)

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_AVAILABLE = 3

QueryFormat = Literal["table", "json", "csv"]
TimelineFormat = Literal["table", "json"]

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


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err.print(f"[bold red]radtrace:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


def _not_available(command: str, issue: str) -> NoReturn:
    _fail(f"'{command}' is not available in radtrace {__version__} yet ({issue}).", EXIT_NOT_AVAILABLE)


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.obj
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
) -> None:
    overrides: dict[str, Any] = {}
    if log_format or log_level:
        overrides["logging"] = {
            key: value for key, value in (("format", log_format), ("level", log_level and log_level.upper())) if value
        }
    try:
        settings = load_settings(config, **overrides)
    except ConfigError as exc:
        _fail(str(exc), EXIT_USAGE)
    configure_logging(settings.logging.format, settings.logging.level)
    ctx.obj = settings


# --- config ------------------------------------------------------------------------------------


@config_app.command("show")
def config_show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a readable tree.")] = False,
) -> None:
    """Print the effective configuration (defaults + file + environment), secrets masked."""
    shown = masked_settings(_settings(ctx))
    if as_json:
        typer.echo(json.dumps(shown, indent=2, ensure_ascii=False))
        return
    table = Table("setting", "value", title="radtrace effective configuration", title_justify="left")
    for key, value in _flatten(shown):
        table.add_row(key, value)
    out.print(table)


@config_app.command("reference")
def config_reference() -> None:
    """Print every setting with its environment variable, type, default and meaning (Markdown)."""
    typer.echo(settings_reference(), nl=False)


def _flatten(node: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(node, dict) and node:
        rows: list[tuple[str, str]] = []
        for key, value in node.items():
            rows.extend(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return rows
    return [(prefix, json.dumps(node, ensure_ascii=False) if not isinstance(node, str) else node)]


# --- services ----------------------------------------------------------------------------------


@app.command()
def serve(ctx: typer.Context) -> None:
    """Run the whole service on this machine until SIGTERM or Ctrl-C (embedded defaults: SQLite, embedded broker).

    After the start-up checks: the DICOM listener, one inference worker, one dispatcher (with the
    reconciler) and the QA API, as supervised child processes logging to stderr; one that dies is
    restarted with backoff. Without model weights the worker waits for them; studies stay queued.
    """
    from radtrace.supervisor import run_serve

    settings = _settings(ctx)
    checks = run_preflight(settings)
    colour = {"ok": "green", "warning": "yellow", "failed": "red"}
    table = Table("check", "result", "detail", title="radtrace serve: start-up checks", title_justify="left")
    for check in checks:
        table.add_row(check.name, f"[{colour[check.status]}]{check.status}[/]", escape(check.detail))
    out.print(table)
    if failed_checks(checks):
        _fail("start-up checks failed; see the table above")
    # The children load the same settings: the same config file, environment and logging options.
    config = ctx.find_root().params.get("config")
    root_args = ["--config", str(config)] if config is not None else []
    root_args += ["--log-format", settings.logging.format, "--log-level", settings.logging.level]
    code = run_serve(settings, root_args=root_args)
    if code:
        raise typer.Exit(code)


@app.command()
def listen(ctx: typer.Context) -> None:
    """Run the DICOM listener (C-ECHO / C-STORE SCP) alone, until SIGTERM or Ctrl-C.

    Runs the start-up checks first (the embedded SQLite database is migrated; an out-of-date
    PostgreSQL schema is refused), then listener.processes processes sharing listener.port.
    """
    from radtrace.dicom_listener.service import run_listener_processes

    settings = _settings(ctx)
    failed = failed_checks(run_preflight(settings))
    if failed:
        _fail("; ".join(f"{check.name}: {check.detail}" for check in failed))
    try:
        code = run_listener_processes(settings)
    except RadtraceError as exc:
        _fail(exc.reason, EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED)
    if code:
        raise typer.Exit(code)


@app.command()
def worker(
    ctx: typer.Context,
    gpu: Annotated[int | None, typer.Option("--gpu", help="The GPU index this worker owns (one per GPU).")] = None,
    queues: Annotated[
        str, typer.Option("--queues", help="Comma-separated roles to take: gpu (inference), dispatch (deliveries).")
    ] = "gpu,dispatch",
    concurrency: Annotated[int, typer.Option(help="Threads of a dispatch-only worker.", min=1, max=64)] = 4,
    reconcile: Annotated[bool, typer.Option(help="Re-ring overdue rows (at start and periodically).")] = True,
    metrics_offset: Annotated[
        int, typer.Option(help="Serve metrics on broker.metrics_port plus this (several workers on one host).", min=0)
    ] = 0,
) -> None:
    """Run a Celery worker: inference (one GPU, model loaded once) and/or report delivery, until SIGTERM.

    Runs the start-up checks first (the embedded SQLite database is migrated; an out-of-date
    PostgreSQL schema is refused).
    """
    from radtrace.worker.service import queue_names, run_worker

    settings = _settings(ctx)
    roles = [role.strip() for role in queues.split(",") if role.strip()]
    try:
        queue_names(settings, roles)
    except ConfigError as exc:
        _fail(exc.reason, EXIT_USAGE)
    failed = failed_checks(run_preflight(settings))
    if failed:
        _fail("; ".join(f"{check.name}: {check.detail}" for check in failed))
    try:
        run_worker(
            settings, roles=roles, gpu=gpu, concurrency=concurrency, reconcile=reconcile, metrics_offset=metrics_offset
        )
    except RadtraceError as exc:
        _fail(exc.reason, EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED)


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    broker: Annotated[bool, typer.Option(help="Also ask the broker for its queue depths.")] = True,
) -> None:
    """Show revisions per state, outbox deliveries, queue depths, the oldest waiting and failures with reasons."""
    from radtrace.worker.status import collect_status

    settings = _settings(ctx)
    with _store(settings) as store:
        try:
            report = collect_status(settings, store, with_queues=broker)
        except RadtraceError as exc:
            _fail(exc.reason)
    if as_json:
        typer.echo(json.dumps(report.as_json(), indent=2))
        return
    table = Table("state", "studies", "revisions", title="studies (by latest revision)", title_justify="left")
    for state, count in report.revisions.items():
        table.add_row(state, str(report.studies[state]), str(count))
    out.print(table)
    table = Table("state", "deliveries", title="outbox", title_justify="left")
    for state, count in report.outbox.items():
        table.add_row(state, str(count))
    out.print(table)
    if broker:
        table = Table("queue", "messages", title="broker queues", title_justify="left")
        for queue, depth in report.queues.items():
            table.add_row(queue, "unreachable" if depth is None else str(depth))
        out.print(table)
    oldest = report.oldest_waiting
    if oldest is None:
        out.print("oldest waiting: none")
    else:
        out.print(
            f"oldest waiting: study {oldest.study_key} revision {oldest.revision} {oldest.state.value} "
            f"for {oldest.waiting_s:.0f} s",
            highlight=False,
        )
    if report.failed:
        table = Table("study", "revision", "attempts", "finished", "reason", title="failed", title_justify="left")
        for failed_revision in report.failed:
            finished = failed_revision.finished_at.isoformat(timespec="seconds") if failed_revision.finished_at else ""
            table.add_row(
                failed_revision.study_key, str(failed_revision.revision), str(failed_revision.attempts), finished,
                escape(failed_revision.reason or ""),
            )  # fmt: skip
        out.print(table)


@app.command()
def send(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="DICOM files or folders to send.")],
    host: Annotated[str, typer.Option(help="The peer's host.")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="The peer's port; default listener.port.")] = None,
    called_ae: Annotated[str | None, typer.Option(help="The peer's AE title; default listener.ae_title.")] = None,
    calling_ae: Annotated[str | None, typer.Option(help="Our AE title; default dispatch.calling_ae_title.")] = None,
) -> None:
    """Send DICOM files to a peer by C-STORE (operator and test tool); exit 1 unless all succeed.

    Files go as they are on disk, in their own transfer syntax, over one association.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, TimeRemainingColumn

    from radtrace.dicom_listener.scu import collect_files, send_files, summarise

    settings = _settings(ctx)
    files = collect_files(paths)
    missing = [str(p) for p in files if not p.is_file()]
    if missing or not files:
        _fail(f"no such file: {', '.join(missing)}" if missing else "no files to send", EXIT_USAGE)
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=err,
    ) as progress:  # fmt: skip
        task = progress.add_task(f"C-STORE to {called_ae or settings.listener.ae_title}", total=len(files))
        try:
            results = send_files(
                files, host, port or settings.listener.port,
                called_ae=called_ae or settings.listener.ae_title,
                calling_ae=calling_ae or settings.dispatch.calling_ae_title,
                progress=lambda _result: progress.advance(task),
            )  # fmt: skip
        except RadtraceError as exc:
            _fail(exc.reason)
    table = Table("status", "files", title="C-STORE results", title_justify="left")
    for status, count in sorted(summarise(results).items()):
        table.add_row(status, str(count))
    out.print(table)
    for failed in (r for r in results if not r.ok):
        err.print(f"{escape(str(failed.path))}: {failed.note or 'failed'}", highlight=False)
    if not all(r.ok for r in results):
        raise typer.Exit(EXIT_FAILED)


# --- audit -------------------------------------------------------------------------------------


@audit_app.command("verify")
def audit_verify(
    ctx: typer.Context,
    checkpoint: Annotated[
        Path | None, typer.Option(help="Signed checkpoint file to check the chain against (needs the key).")
    ] = None,
) -> None:
    """Walk the audit hash chain in constant memory and report the first broken row (exit 1 if broken)."""
    from radtrace.audit.operations import local_operator, verify_audit_log

    settings = _settings(ctx)
    key = settings.audit.checkpoint_key
    with _store(settings) as store, _row_progress("verifying audit chain") as advance:
        result = verify_audit_log(
            store,
            local_operator(),
            checkpoint_file=checkpoint,
            checkpoint_key=key.get_secret_value().encode() if key else None,
            progress=advance,
        )
    out.print(f"checked {result.rows_checked} events; head seq {result.head_seq}, hash {result.head_hash}")
    if result.first_break is not None:
        _fail(f"audit chain broken at seq {result.first_break.seq}: {result.first_break.problem}")
    if result.checkpoint_problem is not None:
        _fail(f"checkpoint does not match: {result.checkpoint_problem}")
    out.print("[green]audit chain valid[/]" + (f" and matches checkpoint {checkpoint}" if checkpoint else ""))


@audit_app.command("checkpoint")
def audit_checkpoint(
    ctx: typer.Context,
    output: Annotated[Path | None, typer.Option(help="File to write; default audit.checkpoint_dir.")] = None,
) -> None:
    """Write an HMAC-signed checkpoint (seq, hash) of the chain's head, to keep outside the database."""
    from radtrace.audit.operations import checkpoint_audit_log, local_operator

    settings = _settings(ctx)
    key = settings.audit.checkpoint_key
    if key is None:
        _fail("audit.checkpoint_key is not set (RADTRACE_AUDIT__CHECKPOINT_KEY); it has no default", EXIT_USAGE)
    if output is None:
        directory = settings.audit.checkpoint_dir or settings.data_dir / "checkpoints"
        output = directory / f"audit-checkpoint-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    with _store(settings) as store:
        written = checkpoint_audit_log(store, local_operator(), key.get_secret_value().encode(), output)
    out.print(f"checkpoint of seq {written.seq} ({written.hash}) written to {output}; keep a copy off this host")


@audit_app.command("query")
def audit_query(
    ctx: typer.Context,
    study_uid: Annotated[str | None, typer.Option(help="Study Instance UID.")] = None,
    accession: Annotated[str | None, typer.Option(help="Accession number.")] = None,
    patient_id: Annotated[str | None, typer.Option(help="Patient ID (the lookup is itself audited with it).")] = None,
    since: Annotated[str | None, typer.Option(help="Recorded at or after, ISO 8601 with zone.")] = None,
    until: Annotated[str | None, typer.Option(help="Recorded before, ISO 8601 with zone.")] = None,
    event_type: Annotated[str | None, typer.Option(help="One event type, e.g. inference_completed.")] = None,
    model_name: Annotated[str | None, typer.Option(help="Model name.")] = None,
    model_version: Annotated[str | None, typer.Option(help="Model version.")] = None,
    label: Annotated[str | None, typer.Option(help="One finding label, matched exactly.")] = None,
    outcome: Annotated[str | None, typer.Option(help="success, minor_failure, serious_failure, major_failure.")] = None,
    limit: Annotated[int, typer.Option(help="Events per page, 1-1000.")] = 100,
    after_seq: Annotated[int, typer.Option(help="Only events after this seq (the previous page's cursor).")] = 0,
    output_format: Annotated[QueryFormat, typer.Option("--format", help="How to print the page.")] = "table",
    timeline: Annotated[
        bool, typer.Option("--timeline", help="With --study-uid: the study's timeline (as `audit timeline`).")
    ] = False,
) -> None:
    """Query audit events for QA, oldest first, one page at a time. The query itself is recorded."""
    from radtrace.audit.operations import local_operator
    from radtrace.audit.presentation import csv_chunks, page_json, page_table
    from radtrace.audit.queries import AuditQuery, QueryError, run_query

    if timeline:
        others = [accession, patient_id, since, until, event_type, model_name, model_version, label, outcome]
        if study_uid is None or any(value is not None for value in others) or output_format == "csv":
            _fail("--timeline takes --study-uid and --format table or json, and no other filter", EXIT_USAGE)
        _print_timeline(ctx, study_uid, output_format)
        return
    try:
        query = AuditQuery.parse(
            study_uid=study_uid, accession=accession, patient_id=patient_id, since=since, until=until,
            event_type=event_type, model_name=model_name, model_version=model_version, label=label,
            outcome=outcome, limit=limit, after_seq=after_seq,
        )  # fmt: skip
    except QueryError as exc:
        _fail(exc.reason, EXIT_USAGE)
    with _store(_settings(ctx)) as store:
        page = run_query(store, query, local_operator())
    if output_format == "json":
        typer.echo(page_json(page))
    elif output_format == "csv":
        for chunk in csv_chunks(page.events):
            typer.echo(chunk, nl=False)
    else:
        out.print(page_table(page))


@audit_app.command("timeline")
def audit_timeline(
    ctx: typer.Context,
    study_uid: Annotated[str, typer.Argument(help="Study Instance UID.")],
    output_format: Annotated[TimelineFormat, typer.Option("--format", help="How to print it.")] = "table",
) -> None:
    """One study's events with the time between them and each stage's duration (exit 1 if it has none)."""
    _print_timeline(ctx, study_uid, output_format)


def _print_timeline(ctx: typer.Context, study_uid: str, output_format: str) -> None:
    from radtrace.audit.operations import local_operator
    from radtrace.audit.presentation import timeline_json, timeline_renderable
    from radtrace.audit.queries import QueryError, study_timeline

    with _store(_settings(ctx)) as store:
        try:
            timeline = study_timeline(store, study_uid, local_operator())
        except QueryError as exc:
            _fail(exc.reason, EXIT_USAGE)
    if not timeline.entries:
        _fail(f"no audit event names study {study_uid}")
    if output_format == "json":
        typer.echo(timeline_json(timeline))
    else:
        out.print(timeline_renderable(timeline))


@token_app.command("create")
def audit_token_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Who or what uses the token; recorded as the user of every query.")],
    role: Annotated[Literal["qa", "admin"], typer.Option(help="qa reads; admin also verifies and exports.")],
) -> None:
    """Create a QA API token and print its secret on stdout, once: only its SHA-256 is kept."""
    from radtrace.audit.operations import local_operator
    from radtrace.audit.tokens import TokenError, create_token

    with _store(_settings(ctx)) as store:
        try:
            issued = create_token(store, name, role, local_operator())
        except TokenError as exc:
            _fail(exc.reason, EXIT_USAGE)
    err.print(f"{role} token {escape(name)!r} created; it is shown only this once:", highlight=False)
    typer.echo(issued.secret)


@token_app.command("list")
def audit_token_list(ctx: typer.Context) -> None:
    """List the QA API tokens (names, roles, dates; never secrets)."""
    from radtrace.audit.tokens import list_tokens

    with _store(_settings(ctx)) as store:
        tokens = list_tokens(store)
    table = Table("name", "role", "created (UTC)", "revoked (UTC)", title="QA API tokens", title_justify="left")
    for token in tokens:
        revoked = f"{token.revoked_at:%Y-%m-%d %H:%M:%S}" if token.revoked_at else ""
        table.add_row(escape(token.name), token.role.value, f"{token.created_at:%Y-%m-%d %H:%M:%S}", revoked)
    out.print(table)


@token_app.command("revoke")
def audit_token_revoke(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The token's name.")]) -> None:
    """Revoke a QA API token at once; requests with it get 401 from then on."""
    from radtrace.audit.operations import local_operator
    from radtrace.audit.tokens import TokenError, revoke_token

    with _store(_settings(ctx)) as store:
        try:
            token = revoke_token(store, name, local_operator())
        except TokenError as exc:
            _fail(exc.reason, EXIT_USAGE)
    out.print(f"token {escape(name)!r} revoked at {token.revoked_at:%Y-%m-%d %H:%M:%S} UTC", highlight=False)


# --- QA API ------------------------------------------------------------------------------------


@app.command()
def api(ctx: typer.Context) -> None:
    """Run the read-only QA HTTP API on api.host:api.port (OpenAPI documentation at /docs).

    With api.bootstrap_admin_token set, an admin token with that secret is created first if missing.
    """
    import uvicorn

    from radtrace.audit.api import create_api
    from radtrace.audit.operations import local_operator
    from radtrace.audit.tokens import ensure_bootstrap_admin

    settings = _settings(ctx)
    with _store(settings) as store:
        bootstrap = settings.api.bootstrap_admin_token
        if bootstrap is not None:
            token = ensure_bootstrap_admin(store, bootstrap.get_secret_value(), local_operator())
            log.info("bootstrap admin token is %r", token.name)
        log.info("QA API on http://%s:%d (documentation at /docs)", settings.api.host, settings.api.port)
        # log_config=None: uvicorn logs through radtrace's handler; its access log is off because it
        # prints query strings (patient IDs); the API logs requests by route template instead.
        uvicorn.run(
            create_api(store), host=settings.api.host, port=settings.api.port, log_config=None, access_log=False
        )


# --- model -------------------------------------------------------------------------------------


@model_app.command("make-tiny")
def model_make_tiny(
    directory: Annotated[Path, typer.Argument(help="Directory to write the tiny model into.")],
    seed: Annotated[int, typer.Option(help="Seed for the random weights and tokenizer.")] = 0,
) -> None:
    """Build a tiny, randomly initialised Qwen2.5-VL model offline (for tests; not for clinical use)."""
    from radtrace.testing.tiny_model import build_tiny_model

    with err.status(f"building tiny Qwen2.5-VL model in {directory} …"):
        try:
            path = build_tiny_model(directory, seed=seed)
        except (OSError, RadtraceError) as exc:
            _fail(f"could not build the tiny model: {exc}")
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    out.print(f"tiny model written to {path} ({size / 1024:.0f} KiB). Random weights: not for clinical use.")


@model_app.command("info")
def model_info(
    ctx: typer.Context,
    hash_weights: Annotated[bool, typer.Option("--hash", help="Also compute the weights' sha256 (cached).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show which model, profile and backend the settings select, and whether the weights are here."""
    from radtrace.model.presentation import model_overview, overview_table

    settings = _settings(ctx)
    overview = model_overview(
        settings.model, hash_weights=hash_weights, cache_file=settings.data_dir / "cache" / "weights-sha256.json"
    )
    if as_json:
        typer.echo(json.dumps({"overview": overview, "settings": masked_settings(settings)["model"]}, indent=2))
        return
    out.print(overview_table(overview))
    table = Table("setting", "value", title="model settings", title_justify="left")
    for key, value in _flatten(masked_settings(settings)["model"]):
        table.add_row(key, value)
    out.print(table)


@model_app.command("read")
def model_read(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A DICOM file or study folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the reading as JSON.")] = False,
) -> None:
    """Read one study with the configured model and print the reasoning and findings."""
    from radtrace.model.presentation import reading_view
    from radtrace.model.reader import StudyReader
    from radtrace.model.study import Skipped, load_study_images

    settings = _settings(ctx)
    try:
        images = load_study_images(path)
        with err.status("reading the study …"):
            outcome = StudyReader(settings.model, data_dir=settings.data_dir).read(images)
    except RadtraceError as exc:
        _fail(exc.reason, EXIT_FAILED)
    if isinstance(outcome, Skipped):
        if as_json:
            typer.echo(json.dumps({"skipped": outcome.reason}))
        else:
            out.print(f"skipped: {outcome.reason}", highlight=False)
        return
    if as_json:
        typer.echo(outcome.to_json())
    else:
        out.print(reading_view(outcome))


# --- db ----------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context,
    app_role: Annotated[
        str | None, typer.Option(help="PostgreSQL: also create this login role, INSERT/SELECT only on the audit log.")
    ] = None,
) -> None:
    """Create or migrate the work and audit tables to the latest revision (safe to repeat)."""
    from radtrace.store.migrate import upgrade

    with _store(_settings(ctx)) as store, err.status("migrating the database …"):
        revision = upgrade(store, app_role=app_role)
    out.print(f"database at revision {revision}")


@db_app.command("current")
def db_current(ctx: typer.Context) -> None:
    """Show the database's migration revision and whether it is the newest (exit 1 if not)."""
    from radtrace.store.migrate import current_revision, head_revision

    with _store(_settings(ctx)) as store:
        current = current_revision(store)
    head = head_revision()
    out.print(f"database revision: {current or 'none (empty database)'}; newest: {head}")
    if current != head:
        _fail("the database is not at the newest revision; run 'radtrace db upgrade'")


@contextlib.contextmanager
def _store(settings: Settings) -> Iterator[Store]:
    """The work database, with database errors turned into a clear message and exit code 1."""
    from radtrace.store.engine import Store

    store: Store | None = None
    try:
        store = Store.from_url(
            settings.store_url, pool_size=settings.store.pool_size, connect_timeout_s=settings.store.connect_timeout_s
        )
        yield store
    except RadtraceError as exc:
        _fail(exc.reason, EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_FAILED)
    finally:
        if store is not None:
            store.dispose()


@contextlib.contextmanager
def _row_progress(description: str) -> Iterator[Callable[[int], None]]:
    """A progress line on stderr counting rows; yields the callback that advances it."""
    with Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed:,} rows"), console=err
    ) as progress:
        task = progress.add_task(description, total=None)
        yield lambda done: progress.update(task, completed=done)


def main() -> None:
    """Console-script entry point."""
    app()
