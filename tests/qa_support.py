"""A seeded synthetic reading history for the QA tests: studies over many days with a planted label drift and
a planted failure burst (plain records, no database)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from radtrace.qa.operations import StudyOutcome

START = date(2026, 1, 5)
PREVALENCE = {
    "Atelectasis": 0.20,
    "Cardiomegaly": 0.12,
    "Lung Opacity": 0.18,
    "Pleural Effusion": 0.15,
    "Pneumothorax": 0.03,
    "Support Devices": 0.25,
}
DRIFT_LABEL = "Pleural Effusion"
BASELINE_FAILURE = 0.01


@dataclass(frozen=True)
class History:
    """Readings (when, labels present) and outcomes of every study, and what was planted where."""

    readings: list[tuple[datetime, tuple[str, ...]]]
    outcomes: list[StudyOutcome]
    drift_from: date
    burst_day: date


def synthetic_history(
    *,
    seed: int = 17,
    days: int = 90,
    per_day: tuple[int, int] = (80, 120),
    drift_from_day: int = 70,
    drifted_prevalence: float = 0.35,
    burst_day: int = 80,
    burst_failure: float = 0.30,
) -> History:
    """``days`` days from :data:`START`, each with a uniform ``per_day`` count of studies; from day
    ``drift_from_day`` on, :data:`DRIFT_LABEL` is present with ``drifted_prevalence``; on day ``burst_day``
    a study fails with ``burst_failure`` (else :data:`BASELINE_FAILURE`)."""
    rng = random.Random(seed)
    readings: list[tuple[datetime, tuple[str, ...]]] = []
    outcomes: list[StudyOutcome] = []
    for day in range(days):
        midnight = datetime.combine(START + timedelta(days=day), datetime.min.time(), tzinfo=UTC)
        for _ in range(rng.randint(*per_day)):
            when = midnight + timedelta(seconds=rng.randrange(86_400))
            failure = burst_failure if day == burst_day else BASELINE_FAILURE
            if rng.random() < failure:
                outcomes.append(StudyOutcome(when, "failed", reason="model timeout"))
                continue
            prevalence = dict(PREVALENCE)
            if day >= drift_from_day:
                prevalence[DRIFT_LABEL] = drifted_prevalence
            labels = tuple(label for label, p in prevalence.items() if rng.random() < p)
            readings.append((when, labels))
            outcomes.append(StudyOutcome(when, "reported", refused=rng.random() < 0.005))
    return History(readings, outcomes, START + timedelta(days=drift_from_day), START + timedelta(days=burst_day))
