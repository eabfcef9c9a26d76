"""The workers' /metrics says when a destination is on hold and when a model server's reading is stopped for
unparseable output: both wait for an operator (``radtrace dispatch retry``, ``radtrace model resume``) and are never
lifted by themselves, but before this the scrape had no series for either (only ``radtrace status`` said them), so
deploy/prometheus/radtrace-rules.yml could not alert on them.

The hold is placed by the real delivery step against a PACS that refuses our calling AE title (A-ASSOCIATE-RJ
1/1/3, as in test_dispatch_destination_hold); the stop is the model_outages row the output guard writes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dispatch_hold_support import counting_pacs, reported_revisions
from radtrace.config import DispatchSettings, Settings
from radtrace.store.base import utc_now
from radtrace.store.engine import Store
from radtrace.worker.metrics import QueueDepthCollector
from radtrace.worker.outage_table import ModelOutageRow
from worker_support import deliveries_over

pytestmark = pytest.mark.integration

SERVER = "http://vllm.example:8000/v1 (nv-reason-cxr)"


def _scrape(settings: Settings, store: Store) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(QueueDepthCollector(settings, store))
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for sample in family.samples
    }


def test_a_destination_on_hold_and_a_stopped_model_are_gauges_until_lifted(tmp_path: Path, sqlite_store: Store) -> None:
    (tmp_path / "drop").mkdir()
    with counting_pacs("PACS", admits=["NIGHTSHIFT"]) as refusing:  # RADTRACE is not admitted: 1/1/3
        dispatch = DispatchSettings(pacs=[refusing.destination], calling_ae_title="RADTRACE",
                                    file_drop_dir=tmp_path / "drop", backoff_max_s=60)  # fmt: skip
        settings = Settings(data_dir=tmp_path / "data", store={"url": str(sqlite_store.engine.url)}, dispatch=dispatch)
        quiet = _scrape(settings, sqlite_store)
        assert not [key for key in quiet if key[0].startswith(("radtrace_dispatch_held", "radtrace_model_reading"))]

        deliveries = deliveries_over(sqlite_store, dispatch, tmp_path / "data" / "outbox")
        _, ids = reported_revisions(sqlite_store, deliveries.outbox, dispatch, 3)
        for outbox_id in ids:
            deliveries.dispatch(outbox_id)
        assert refusing.connections == 1  # held at the first refusal
    with sqlite_store.session() as session:
        session.add(ModelOutageRow(server=SERVER, opened_seq=1, recorded_at=utc_now(), stop=True, worker="w1",
                                   reason="4 unparseable studies in a row"))  # fmt: skip
    scraped = _scrape(settings, sqlite_store)
    assert scraped[("radtrace_dispatch_held_deliveries", (("destination", refusing.name),))] == 3
    assert scraped[("radtrace_model_reading_stopped", (("server", SERVER),))] == 1
