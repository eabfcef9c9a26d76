"""The ``radtrace`` command. Thin: parse arguments, load settings, call into the packages.

This package's own module stays light: the console script imports it before anything can handle Ctrl-C, and
importing the command tree (:mod:`.application`) takes about a second. :func:`main` installs
:func:`radtrace.cli.interrupt.exit_while_starting` first, so Ctrl-C in that second is one line and status 130.
"""

from __future__ import annotations

from radtrace.cli.interrupt import exit_while_starting

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing first (mypy reads the name as True)
if TYPE_CHECKING:
    import typer

    app: typer.Typer

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    exit_while_starting()
    from radtrace.cli.application import app

    app()


def __getattr__(name: str) -> typer.Typer:
    """``radtrace.cli.app``: the root Typer app, imported on first use."""
    if name == "app":
        from radtrace.cli.application import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
