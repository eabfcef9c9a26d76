"""QA statistics: how the model performs over time, as pure functions over plain values.

* :mod:`radtrace.qa.intervals` — Wilson intervals and percentiles;
* :mod:`radtrace.qa.agreement` — per-label agreement with the radiologists (``finding_assessed`` events);
* :mod:`radtrace.qa.drift` — label prevalence p-charts against a baseline, drift runs, failure bursts;
* :mod:`radtrace.qa.operations` — failure, refusal and sanitised-text rates, stage latencies, input mix;
* :mod:`radtrace.qa.metrics` — the drift and failure rules as Prometheus gauges, read from the database.

The web console draws these; nothing here renders or serves anything.
"""
