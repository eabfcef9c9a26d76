"""A GPU worker reads with the model settings the site's other running workers read with.

On a multi-host site every GPU worker takes studies from the same queue, so a host set up with other model settings
(the demo backend left on, another profile, another pixel budget or token limit) writes some of the site's drafts
with another model, by chance of which worker took the study; each draft records its model, but nothing said so at
start: every check passed. This check compares what this worker's settings say it will read with (backend, profile
and its version, prompt, pixel budget, token limit) with the model identity the newest reading of each running
worker recorded (``inference_completed``). It is a warning, not a refusal: a model changed worker by worker (a
Kubernetes rolling update) passes through the same mix, and must be able to start.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from radtrace.config import Settings
from radtrace.preflight.check import Check
from radtrace.preflight.database import judged_on_postgresql

if TYPE_CHECKING:
    from radtrace.store.engine import Store
    from radtrace.store.nodes import SeenNode

__all__ = ["READINGS_LOOKED_AT", "site_model_check"]

#: How many of the newest readings are looked at for the running workers' last ones.
READINGS_LOOKED_AT = 500
_NAME = "model settings across workers"
_GENERATION = ("max_new_tokens", "min_pixels", "max_pixels")


def site_model_check(settings: Settings) -> Check | None:
    """For a GPU worker on PostgreSQL: ``ok`` when the running workers' newest readings used what this worker's model
    settings give, a ``warning`` naming each difference and the worker (host, pid) otherwise; ``None`` on SQLite (one
    host) or when the database does not answer (the database check says it)."""
    return judged_on_postgresql(settings, _judge)


def expected_identity(settings: Settings) -> dict[str, Any]:
    """What a reading of this worker will record in its model identity, from the settings alone (no weights loaded):
    the backend, the profile, its version and prompt, and the generation's token limit and pixel budget."""
    from radtrace.model.profiles import get_profile
    from radtrace.model.reader import effective_budget

    profile = get_profile(settings.model.profile)
    budget = effective_budget(settings.model, profile)
    return {
        "backend": settings.model.backend,
        "profile": profile.name,
        "profile_version": profile.version,
        "prompt": profile.prompt,
        "max_new_tokens": budget.max_new_tokens,
        "min_pixels": budget.min_pixels,
        "max_pixels": budget.max_pixels,
    }


def _judge(settings: Settings, store: Store) -> Check:
    from radtrace.store.nodes import live_nodes

    running = live_nodes(store, stale_after_s=settings.store.node_stale_after_s)
    workers = {(node.host, node.pid): node for node in running if node.role == "worker"}
    if not workers:
        return Check(_NAME, "ok", "no other GPU worker runs on this database")
    ours = expected_identity(settings)
    newest = _newest_identities(store, workers)
    if not newest:
        return Check(_NAME, "ok", f"the {len(workers)} running GPU worker(s) read nothing yet")
    differences = []
    for node, identity in newest.items():
        theirs = {key: identity.get(key) for key in ("backend", "profile", "profile_version", "prompt")}
        generation = identity.get("generation")
        generation = generation if isinstance(generation, dict) else {}
        theirs |= {key: generation[key] for key in _GENERATION if key in generation}
        differ = [f"{key} {_shown(ours[key])} here, {_shown(value)} there" for key, value in theirs.items()
                  if value != ours[key] and not (key in _GENERATION and ours["backend"] == "demo")]  # fmt: skip
        if differ:
            differences.append(f"{node.role} on {node.host} (pid {node.pid}) read with {'; '.join(differ)}")
    if not differences:
        return Check(_NAME, "ok", f"as the newest readings of the {len(newest)} running GPU worker(s)")
    return Check(_NAME, "warning", f"{' / '.join(differences)}: the site's drafts come from two model settings, "
                 "by chance of which worker takes each study; set the same RADTRACE_MODEL__* on every GPU worker "
                 "(a model changed worker by worker mixes them only until the last one is restarted)")  # fmt: skip


def _shown(value: object) -> str:
    text = str(value)
    return repr(text if len(text) <= 60 else f"{text[:57]}...")


def _newest_identities(store: Store, workers: dict[tuple[str, int], SeenNode]) -> dict[SeenNode, dict[str, Any]]:
    """The model identity of each running worker's newest reading (those that read nothing yet are left out)."""
    from radtrace.audit.events import EventType
    from radtrace.audit.schema import AuditEventRow
    from radtrace.store.engine import translate_db_error

    try:
        with store.engine.connect() as connection:
            rows = connection.execute(
                sa.select(AuditEventRow.actor_process, AuditEventRow.payload)
                .where(AuditEventRow.event_type == EventType.INFERENCE_COMPLETED.value)
                .order_by(AuditEventRow.seq.desc())
                .limit(READINGS_LOOKED_AT)
            ).all()
    except sa.exc.SQLAlchemyError as exc:
        raise translate_db_error(exc, "reading the newest readings") from exc
    found: dict[SeenNode, dict[str, Any]] = {}
    for process, payload in rows:
        host, _, pid = process.rpartition("@")[2].rpartition(":")  # PROGRAM@HOST:PID
        node = workers.get((host, int(pid))) if pid.isdigit() else None
        if node is None or node in found:
            continue
        try:
            identity = json.loads(payload).get("identity")
        except (ValueError, AttributeError):
            continue
        if isinstance(identity, dict):
            found[node] = identity
    return found
