"""``radtrace model make-tiny|export-onnx|info|read|resume``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from radtrace.cli.common import EXIT_FAILED, err, fail, flatten, model_app, open_store, out, settings_of
from radtrace.config_reference import masked_settings
from radtrace.errors import RadtraceError


@model_app.command("make-tiny")
def model_make_tiny(
    directory: Annotated[Path, typer.Argument(help="Directory to write the tiny model into.")],
    seed: Annotated[int, typer.Option(help="Seed for the random weights and tokenizer.")] = 0,
) -> None:
    """Build a tiny, randomly initialised Qwen2.5-VL model offline (for tests; not for clinical use)."""
    from radtrace.model.tiny_model import build_tiny_model

    with err.status(f"building tiny Qwen2.5-VL model in {directory} …"):
        try:
            path = build_tiny_model(directory, seed=seed)
        except (OSError, RadtraceError) as exc:
            fail(f"could not build the tiny model: {exc}")
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    out.print(f"tiny model written to {path} ({size / 1024:.0f} KiB). Random weights: not for clinical use.")


@model_app.command("export-onnx")
def model_export_onnx(
    source: Annotated[Path, typer.Argument(help="Checkpoint directory (Qwen2.5-VL class) to export.")],
    destination: Annotated[Path, typer.Argument(help="Empty directory (or an earlier export) to write into.")],
    int4: Annotated[bool, typer.Option("--int4", help="Quantize the text decoder's weights to 4 bits.")] = False,
) -> None:
    """Export a checkpoint to ONNX (vision, embedding, decoder with KV cache) for backend 'onnxruntime'."""
    from radtrace.model.onnx.export import export_onnx

    with err.status(f"exporting {source} to ONNX in {destination} …"):
        try:
            manifest = export_onnx(source, destination, int4=int4)
        except (OSError, RadtraceError) as exc:
            fail(f"could not export the model: {exc}")
    size = sum(f.stat().st_size for f in destination.iterdir() if f.is_file())
    out.print(
        f"ONNX export ({manifest['dtype']}, opset {manifest['opset']}) written to {destination} "
        f'({size / 1024**2:.1f} MiB); use it with model.backend = "onnxruntime" and model.path = {destination}',
        highlight=False,
    )
    for graph, difference in manifest["max_abs_difference_to_torch"].items():
        out.print(f"  {graph}: largest difference to torch on the tracing inputs {difference:.2e}", highlight=False)


@model_app.command("info")
def model_info(
    ctx: typer.Context,
    hash_weights: Annotated[bool, typer.Option("--hash", help="Also compute the weights' sha256 (cached).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show which model, profile and backend the settings select, and whether the weights are here."""
    from radtrace.model.presentation import model_overview, overview_table

    settings = settings_of(ctx)
    overview = model_overview(
        settings.model, hash_weights=hash_weights, cache_file=settings.data_dir / "cache" / "weights-sha256.json"
    )
    if as_json:
        typer.echo(json.dumps({"overview": overview, "settings": masked_settings(settings)["model"]}, indent=2))
        return
    out.print(overview_table(overview))
    table = Table("setting", "value", title="model settings", title_justify="left")
    for key, value in flatten(masked_settings(settings)["model"]):
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

    settings = settings_of(ctx)
    try:
        images = load_study_images(path, assumed_character_set=settings.listener.assumed_character_set)
        with err.status("reading the study …"):
            outcome = StudyReader.for_service(settings).read(images)
    except RadtraceError as exc:
        fail(exc.reason, EXIT_FAILED)
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


@model_app.command("resume")
def model_resume(
    ctx: typer.Context,
    server: Annotated[
        str | None,
        typer.Option(help="The model server whose stop to lift, as radtrace status names it (default: the only one)."),
    ] = None,
) -> None:
    """Lift a stop for unparseable model output after checking the model and the held studies (audited).

    After model.unparsed_stop_after (4) unparseable readings of different studies in a row the workers stop reading
    until a probe reading of the held batch parses. Output is deterministic: a healthy model that wrote four odd
    studies in a row stays stopped. This closes the stop; every worker reads again (its count from zero) and stops
    again after as many more if the model really writes garbage. A model server that does not answer is not lifted
    here: it ends when the server answers.
    """
    from radtrace.audit.operations import local_operator
    from radtrace.store.base import utc_now
    from radtrace.worker.breaker import RECHECK_S
    from radtrace.worker.outage import NothingToLiftError, lift_stop

    settings = settings_of(ctx)
    with open_store(settings) as store:
        try:
            lifted = lift_stop(store, local_operator(), utc_now, server)
        except NothingToLiftError as exc:
            fail(exc.reason)
    out.print(
        f"stop lifted on {escape(lifted.server)} (stopped since {lifted.since:%Y-%m-%d %H:%M:%S} UTC: "
        f"{escape(lifted.reason)}): every worker reads again within about a second (a held one looks every "
        f"{RECHECK_S:g} s), counting from zero; if the model really writes garbage it stops again after "
        f"{settings.model.unparsed_stop_after} more unparseable studies in a row",
        highlight=False,
        soft_wrap=True,
    )
