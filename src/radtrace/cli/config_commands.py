"""``radtrace config show|reference``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from radtrace.cli.common import config_app, flatten, out, settings_of
from radtrace.config import setting_source
from radtrace.config_reference import masked_settings, settings_reference


@config_app.command("show")
def config_show(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a readable tree.")] = False,
) -> None:
    """Print the effective configuration (defaults + file + environment), secrets masked."""
    shown = masked_settings(settings_of(ctx))
    if as_json:
        typer.echo(json.dumps(shown, indent=2, ensure_ascii=False))
        return
    config_file = ctx.find_root().params.get("config")
    table = Table("setting", "value", "from", title="radtrace effective configuration", title_justify="left")
    for key, value in flatten(shown):
        table.add_row(key, value, setting_source(key, config_file))
    out.print(table)


@config_app.command("reference")
def config_reference() -> None:
    """Print every setting with its environment variable, type, default and meaning (Markdown)."""
    typer.echo(settings_reference(), nl=False)
