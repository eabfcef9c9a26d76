"""``radtrace dispatch retry DESTINATION``: a destination's hold lifted and its failed deliveries asked for again once
their cause is fixed."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from radtrace.cli.common import EXIT_USAGE, app, fail, open_store, out, settings_of

dispatch_app = typer.Typer(help="Deliveries to the PACS, the RIS and the file drop.", no_args_is_help=True)
app.add_typer(dispatch_app, name="dispatch")

__all__ = ["dispatch_app", "dispatch_retry"]


@dispatch_app.command("retry")
def dispatch_retry(
    ctx: typer.Context,
    destination: Annotated[
        str, typer.Argument(help="As the failure names it: AE@host:port for a PACS, host:port for the RIS.")
    ],
) -> None:
    """Lift DESTINATION's hold and deliver again every failed delivery to it (after fixing what the reason says;
    audited).

    A PACS that rejected the association permanently (an AE title it does not know) is on hold: its deliveries wait,
    held, until this is run (radtrace status shows it). When dispatch.pacs now names that PACS with another AE title,
    the deliveries go to it. The deliveries asked for again are counted as refused by the peer (it answered that it
    did not take them: fix what it said first) or failed (no answer, a timeout, a dropped connection).
    """
    from radtrace.audit.operations import local_operator
    from radtrace.reporting.dispatch.redelivery import RedeliveryError, redeliver_failed
    from radtrace.worker.doorbell import ring_dispatch

    settings = settings_of(ctx)
    with open_store(settings) as store:
        try:
            done = redeliver_failed(store, settings.dispatch, destination, local_operator())
        except RedeliveryError as exc:
            fail(exc.reason, EXIT_USAGE)
    released = done.lifted.released if done.lifted is not None else []
    unrung = sum(1 for outbox_id in [*released, *done.outbox_ids] if not ring_dispatch(settings, outbox_id))
    moved = f" (was {escape(done.readdressed_from)})" if done.readdressed_from else ""
    if done.lifted is not None:
        out.print(
            f"hold on {escape(done.lifted.destination)} lifted (held since {done.lifted.since:%Y-%m-%d %H:%M:%S} UTC); "
            f"{len(released)} held deliveries to {escape(done.destination)}{moved} are due now",
            highlight=False,
        )
    if done.outbox_ids or done.lifted is None:
        refused = len(done.refused)
        how = f" ({refused} refused by the peer, {len(done.outbox_ids) - refused} failed)" if done.outbox_ids else ""
        out.print(
            f"{len(done.outbox_ids)} failed deliveries to {escape(done.destination)}{moved} are pending again{how}; "
            f"{done.revisions} revisions reported again",
            highlight=False,
        )
    if done.left_failed:
        out.print(f"left failed (already delivered there): outbox rows {', '.join(map(str, done.left_failed))}")
    if done.not_built:
        out.print(
            f"left failed (withdrawals that could not be built, nothing to send: withdraw those drafts at the peer "
            f"by hand; radtrace study show UID): outbox rows {', '.join(map(str, done.not_built))}",
            highlight=False,
        )
    if unrung:
        out.print(f"the broker did not answer for {unrung} of them: the reconciler will pick them up", highlight=False)
