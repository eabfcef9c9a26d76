"""How ``radtrace model info`` and ``radtrace model read`` show things (rich renderables and plain data)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from radtrace.config import ModelSettings
from radtrace.errors import ModelLoadError
from radtrace.logging import escape as escape_controls
from radtrace.model.identity import weight_files, weights_sha256
from radtrace.model.image_marks import image_marks
from radtrace.model.loading import resolve_checkpoint
from radtrace.model.polarity import SUSPECTED_NEGATIVE, polarity_records
from radtrace.model.profiles import get_profile
from radtrace.model.reader import effective_budget
from radtrace.model.reading import Reading
from radtrace.model.tiny_model import TINY_MARKER_FILE

__all__ = ["model_overview", "overview_table", "reading_view"]


def model_overview(
    settings: ModelSettings, *, hash_weights: bool = False, cache_file: Path | None = None
) -> dict[str, Any]:
    """What the settings select, as plain data: profile, budget, backend and where the weights are."""
    profile = get_profile(settings.profile)
    budget = effective_budget(settings, profile)
    overview: dict[str, Any] = {
        "profile": profile.name,
        "profile_version": profile.version,
        "model_name": profile.model_name,
        "prompt": profile.prompt,
        "labels": len(profile.labels),
        "takes_lateral": profile.takes_lateral,
        "backend": settings.backend,
        "min_pixels": budget.min_pixels,
        "max_pixels": budget.max_pixels,
        "max_new_tokens": budget.max_new_tokens,
        "batch_size": settings.batch_size,
        "device": settings.device,
        "dtype": settings.dtype,
    }
    if settings.backend == "vllm":
        overview["source"] = settings.vllm_url
        overview["vllm_model"] = settings.vllm_model or "(the server's only model)"
        return overview
    source: Path | str = settings.path if settings.path is not None else settings.repo_id
    overview["source"] = str(source)
    overview["revision"] = settings.revision
    try:
        directory = resolve_checkpoint(
            source, allow_download=False, revision=settings.revision if settings.path is None else None
        )
    except (ModelLoadError, ValueError) as exc:
        overview["available"] = False
        overview["problem"] = str(exc)
        return overview
    files = weight_files(directory)
    overview["available"] = bool(files)
    overview["directory"] = str(directory)
    overview["weight_files"] = len(files)
    overview["weight_bytes"] = sum(path.stat().st_size for path in files)
    overview["tiny_test_model"] = (directory / TINY_MARKER_FILE).is_file()
    if hash_weights:
        overview["weights_sha256"] = weights_sha256(directory, cache_file=cache_file)
    return overview


def overview_table(overview: dict[str, Any]) -> Table:
    """:func:`model_overview` as a two-column table."""
    table = Table("item", "value", title="model", title_justify="left")
    for key, value in overview.items():
        shown = json.dumps(value) if isinstance(value, bool) or value is None else str(value)
        table.add_row(key, _shown(shown))
    return table


def reading_view(reading: Reading) -> RenderableType:
    """A reading for a person: chosen image, reasoning by section, findings, conclusions, tokens and timings."""
    parts: list[RenderableType] = []
    images = Table("role", "view", "SOP Instance UID", "source px", "model px", "flags", title="images shown")
    warnings: list[str] = []
    for image in reading.images:
        polarity = _polarity_notes(image.preparation)
        marks = image_marks(image.preparation)  # lossy, text burned in, a window not applied: as the drafts say
        image_flags = [
            *image.view_flags,
            *(["probably inverted"] if SUSPECTED_NEGATIVE in polarity else []),
            *(mark.flag for mark in marks),
        ]
        images.add_row(
            _shown(image.role or "-"),
            _shown(image.view or "?"),
            _shown(image.sop_instance_uid),
            f"{image.rows} x {image.columns}",
            f"{image.model_rows} x {image.model_columns}",
            _shown(", ".join(image_flags) or "-"),
        )
        warnings.extend(f"{image.role or 'image'}: {note}" for note in polarity.values())
        warnings.extend(f"{image.role or 'image'}: {mark.text}" for mark in marks)
    parts.append(images)
    for warning in warnings:
        parts.append(Text(_shown(warning), style="bold yellow"))
    if reading.flags:
        flags = ", ".join(sorted(flag.value for flag in reading.flags))
        parts.append(Text(f"flags: {flags}", style="bold yellow"))
    reasoning = Table("section", "reasoning", title="reasoning", show_lines=True)
    for step in reading.reasoning:
        reasoning.add_row(_shown(step.section), _shown(step.text))
    if not reading.reasoning:
        reasoning.add_row("-", _shown(_clip(reading.raw_text, 600)) or "(no text)")
    parts.append(reasoning)
    findings = Table("label", "status", "boxes (source px)", "evidence", title="findings")
    for finding in reading.findings:
        boxes = "; ".join(f"[{b.x_min:.0f}, {b.y_min:.0f}, {b.x_max:.0f}, {b.y_max:.0f}]" for b in finding.boxes)
        findings.add_row(
            _shown(finding.label), finding.status.value, boxes or "-", _shown(_clip(finding.evidence or "", 160))
        )
    if not reading.findings:
        findings.add_row("-", "-", "-", "(none parsed)")
    parts.append(findings)
    conclusions = Table.grid(padding=(0, 2))
    conclusions.add_row("answer", _shown(", ".join(reading.answer_labels)) or "-")
    conclusions.add_row("impression", _shown(reading.impression or "-"))
    conclusions.add_row("differential", _shown(", ".join(reading.differential)) or "-")
    identity = reading.identity
    described = (
        f"{identity.profile} v{identity.profile_version}, {identity.backend}, {identity.device}, {identity.dtype}"
    )
    conclusions.add_row("model", _shown(f"{identity.model_name} ({described})"))
    tokens, timings = reading.tokens, reading.timings
    conclusions.add_row("tokens", f"prompt {tokens.prompt} (image {tokens.image}), generated {tokens.generated}")
    conclusions.add_row(
        "timings",
        f"prepare {timings.prepare_s:.3f} s, generate {timings.generate_s:.3f} s, parse {timings.parse_s:.4f} s",
    )
    parts.append(conclusions)
    return Group(*parts)


def _polarity_notes(preparation: tuple[dict[str, Any], ...]) -> dict[str, str]:
    """What the inversion step recorded against the picture's polarity, in its own words, by kind
    (:func:`radtrace.model.polarity.polarity_records`): a picture that looks like a negative, a Presentation LUT
    Shape not followed."""
    notes: dict[str, str] = {}
    for record in polarity_records(preparation):
        if record.recorded is not None:
            notes[record.kind] = record.recorded
    return notes


def _shown(text: str) -> str:
    """Model (or header) text for the terminal: rich markup escaped, and every control character but the line
    break written ``\\xNN``, as log lines write them; rich passes ESC, C1 and the bidirectional controls through,
    and a model's ``ESC ]0;…`` or ``ESC [2J`` would retitle or clear the terminal."""
    return escape("\n".join(escape_controls(line) for line in text.split("\n")))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
