"""The drafts' sizes for a few readings: the SR, ORU and FHIR bytes, the ORU's TX lines of evidence and of reasoning,
the reasoning's characters it holds, and the SR's evidence TEXT items.

Cases: the NEMA RG1 real film (no Patient's Age: the derived one and its note); a 290 kB reasoning with one finding
and with 13 (the ORU's evidence allowance against the reasoning's lines: the peer is the one-finding row of the same
run); a finding with 4 boxes (the SR's evidence once per finding). Run against another checkout's code with
PYTHONPATH=<its src> to compare (e.g. a git worktree of the commit before).

    .venv/bin/python bench/draft_sizes.py [--quick]     # --quick: no 290 kB reasoning (hl7apy takes 25 s a message)
"""

from __future__ import annotations

import argparse
import io
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the reporting tests' helpers

WHEN = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()

    from pydicom import dcmread

    import radtrace
    from radtrace.config import ReportingSettings
    from radtrace.model.reading import BoundingBox, Finding, FindingStatus, ReasoningStep
    from radtrace.reporting.codes import FINDING_CODES
    from radtrace.reporting.drafts import build_drafts
    from reporting_support import long_reasoning, reading, real_film, source_study

    sources = source_study()
    labels = [entry.label for entry in FINDING_CODES.values() if entry.label != "No Finding"]

    def long(findings: int) -> object:
        named = labels[:findings]
        steps = tuple(
            ReasoningStep(
                section=step.section,
                text=step.text
                + " "
                + " ".join(f"{label} is weighed in the {step.section} section." for label in named),
            )
            for step in long_reasoning(260_000)
        )
        return reading(
            sources, reasoning=steps, findings=[Finding(label=x, status=FindingStatus.PRESENT) for x in named]
        )

    sop = str(sources[0].SOPInstanceUID)
    boxes = tuple(
        BoundingBox(sop_instance_uid=sop, x_min=10.0 + 20 * n, y_min=50.0, x_max=25.0 + 20 * n, y_max=80.0)
        for n in range(4)
    )
    steps = tuple(
        ReasoningStep(section=section, text=f"Patchy atelectasis at the {where}, with volume loss at the {where}.")
        for section, where in (("lungs", "right base"), ("pleura", "left base"), ("summary", "both bases"))
    )
    four_boxes = reading(
        sources,
        reasoning=steps,
        findings=[Finding(label="Atelectasis", status=FindingStatus.PRESENT, boxes=boxes, evidence=steps[0].text)],
    )
    nema = real_film("nema-rg1-cr-chest-pa-mono1-j2k-lossy.dcm")
    cases = [("NEMA film, no Patient's Age", reading([nema]), [nema]), ("1 finding, 4 boxes", four_boxes, sources)]
    if not args.quick:
        cases += [
            ("290 kB reasoning, 1 finding", long(1), sources),
            ("290 kB reasoning, 13 findings", long(13), sources),
        ]

    print(f"radtrace {radtrace.__file__}")
    columns = ["case", "SR B", "ORU B", "FHIR B", "ORU evidence lines", "ORU reasoning lines", "reasoning chars"]
    print("| " + " | ".join([*columns, "SR evidence items"]) + " |")
    print("|---|---|---|---|---|---|---|---|")
    for name, read, datasets in cases:
        files = build_drafts(read, datasets, settings=ReportingSettings(), revision=1, created_at=WHEN)  # type: ignore[arg-type]
        assert files.hl7 is not None
        assert files.fhir is not None
        tx = [s.split("|") for s in files.hl7.decode().split("\r") if s.startswith("OBX|") and s.split("|")[2] == "TX"]
        evidence = [f for f in tx if f[3].startswith("RT-EVID")]
        reasoning = [f for f in tx if f[4].startswith("R")]
        sr = dcmread(io.BytesIO(files.sr))
        items = 0
        stack = list(sr.ContentSequence)
        while stack:
            item = stack.pop()
            stack += list(item.get("ContentSequence", []))
            items += item.get("ValueType") == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == "RT-EVID"
        print(
            f"| {name} | {len(files.sr):,} | {len(files.hl7):,} | {len(files.fhir):,} | {len(evidence)} | "
            f"{len(reasoning)} | {sum(len(f[5]) for f in reasoning):,} | {items} |"
        )


if __name__ == "__main__":
    main()
