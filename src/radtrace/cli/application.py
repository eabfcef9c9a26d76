"""The whole ``radtrace`` command tree: importing this module registers every command on the root app.

One module per group of commands (:mod:`.services`, :mod:`.send_command`, :mod:`.studies`, :mod:`.audit_commands`,
:mod:`.model_commands`, :mod:`.db_commands`, :mod:`.config_commands`, :mod:`.dispatch_commands`); :mod:`.common`
holds the Typer apps, the root options and the exit codes (0 success, 1 the work failed, 2 bad usage or configuration).
"""

from __future__ import annotations

# Importing the command modules registers their commands on the apps in radtrace.cli.common.
from radtrace.cli import (  # noqa: F401
    audit_commands,
    config_commands,
    db_commands,
    dispatch_commands,
    model_commands,
    send_command,
    services,
    studies,
)
from radtrace.cli.common import app
from radtrace.console.commands import user_app

app.add_typer(user_app, name="user")

__all__ = ["app"]
