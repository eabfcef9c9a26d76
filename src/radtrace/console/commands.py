"""``radtrace user create|list|unlock``: console accounts (registered on the root command by radtrace.cli)."""

from __future__ import annotations

from typing import Annotated, Literal

import typer
from rich.markup import escape
from rich.table import Table

from radtrace.cli.common import EXIT_USAGE, err, fail, open_store, out, settings_of

__all__ = ["user_app"]

user_app = typer.Typer(help="Create, list and unlock review console accounts.", no_args_is_help=True)


@user_app.command("create")
def user_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Sign-in name; recorded as the user of every audit event.")],
    role: Annotated[
        Literal["radiologist", "qa", "admin"],
        typer.Option(help="radiologist decides; qa and admin read (admin also manages accounts)."),
    ],
    generate: Annotated[
        bool, typer.Option("--generate-password", help="Generate a password and print it once instead of asking.")
    ] = False,
    no_password: Annotated[
        bool, typer.Option("--no-password", help="Sign-in only through console.trusted_user_header (SSO proxy).")
    ] = False,
) -> None:
    """Create a console account; the password is asked for (twice) or generated and printed once."""
    from radtrace.audit.operations import local_operator
    from radtrace.console.accounts import AccountError, create_user, generate_password

    password: str | None
    if no_password:
        password = None
    elif generate:
        password = generate_password()
    else:
        try:
            password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
        except typer.Abort:  # input ended (no terminal: a script, ssh without -t) or Ctrl-C
            fail("no password was given: type it twice at a terminal, or use --generate-password (printed once) "
                 "or --no-password", EXIT_USAGE)  # fmt: skip
    with open_store(settings_of(ctx)) as store:
        try:
            create_user(store, name, role, password, local_operator())
        except AccountError as exc:
            fail(exc.reason, EXIT_USAGE)
    err.print(f"{role} {escape(name)!r} created", highlight=False)
    if generate and password is not None:
        err.print("its password is shown only this once:", highlight=False)
        typer.echo(password)


@user_app.command("list")
def user_list(ctx: typer.Context) -> None:
    """List console accounts (names, roles, last sign-in, lock); never hashes."""
    import sqlalchemy as sa

    from radtrace.console.schema import ConsoleUser

    with open_store(settings_of(ctx)) as store, store.session("listing console users") as session:
        users = session.scalars(sa.select(ConsoleUser).order_by(ConsoleUser.name)).all()
    table = Table("name", "role", "last sign-in (UTC)", "failed", "locked since (UTC)", title="console users",
                  title_justify="left")  # fmt: skip
    for user in users:
        last = f"{user.last_login_at:%Y-%m-%d %H:%M}" if user.last_login_at else ""
        locked = f"{user.locked_at:%Y-%m-%d %H:%M}" if user.locked_at else ""
        table.add_row(escape(user.name), user.role, last, str(user.failed_logins), locked)
    out.print(table)


@user_app.command("unlock")
def user_unlock(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The locked account.")]) -> None:
    """Clear an account's lock and failed-login count (recorded)."""
    from radtrace.audit.operations import local_operator
    from radtrace.console.accounts import AccountError, unlock_user

    with open_store(settings_of(ctx)) as store:
        try:
            unlock_user(store, name, local_operator())
        except AccountError as exc:
            fail(exc.reason, EXIT_USAGE)
    err.print(f"{escape(name)!r} unlocked", highlight=False)
