"""Fuzz and abuse: seeded mutated data sets and PDU sequences against a running listener process.

CI sends 300 data sets and 150 PDU sequences, ``RADTRACE_FULL_FUZZ=1`` 1,000 and 500. After each batch of 100:
the process is alive, its RSS is under a bound, a legitimate C-ECHO is answered within 2 s; every instance got a
status; every instance answered 0x0000 is in the spool with the hash its row records. bench/abuse.py runs the same
harness and prints the figures.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from radtrace.testing.abuse import Fuzzer, ListenerProcess, mutated_datasets, mutated_pdus
from radtrace.testing.services import free_port

pytestmark = pytest.mark.integration

SEED = 14
#: CI's sample (about a third of the cases, ~40 s less); ``RADTRACE_FULL_FUZZ=1`` sends the 1,000 and 500.
FULL = os.environ.get("RADTRACE_FULL_FUZZ") == "1"
DATASETS = 1000 if FULL else 300
PDU_SEQUENCES = 500 if FULL else 150
RSS_BOUND = 300 * 1024**2


def test_mutated_datasets_and_pdus_crash_nothing_lose_nothing_and_never_lock_out_a_real_sender(
    tmp_path: Path,
) -> None:
    files = mutated_datasets(tmp_path / "in", DATASETS, SEED)
    sequences = mutated_pdus(PDU_SEQUENCES, SEED)
    with ListenerProcess(tmp_path / "radtrace", free_port(), fsync="false") as listener:
        fuzzer = Fuzzer(listener, rss_bound_bytes=RSS_BOUND)
        fuzzer.check("start")
        fuzzer.send_datasets(files)
        fuzzer.send_pdus(sequences)
        report = fuzzer.report
    print(report)  # the figures, for the run's log
    assert report.broken == []
    assert (report.datasets, report.pdu_sequences) == (DATASETS, PDU_SEQUENCES)
    assert report.crashes == 0
    assert report.without_status == 0
    assert report.acknowledged_but_lost == 0
    assert report.acknowledged > 0  # some mutations are harmless: they must be accepted, not all refused
    assert sum(report.statuses.values()) == DATASETS
    assert report.slowest_echo_s < 2.0
    assert report.peak_rss_bytes < RSS_BOUND
