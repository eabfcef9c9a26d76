"""``radtrace audit export``: the audit log as a file, for sites that collect audit trails by file.

``atna-xml``: one DICOM PS3.15 A.5 ``AuditMessage`` per line (UTF-8, no XML declaration), each validated against
the A.5.1.1 schema and naming its row (``urn:radtrace:audit:<seq>``). ``jsonl``: one JSON object per line with
every stored column of the row (payload parsed), as the QA API returns events.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import IO, Final, Literal

from pydantic import TypeAdapter

from radtrace.audit.atna.message import AuditSource, audit_message_xml
from radtrace.audit.queries import AuditRecord

__all__ = ["ExportFormat", "write_export"]

ExportFormat = Literal["atna-xml", "jsonl"]
_RECORD: Final = TypeAdapter(AuditRecord)


def write_export(
    records: Iterable[AuditRecord], output_format: ExportFormat, source: AuditSource, out: IO[bytes]
) -> int:
    """Write every record in ``output_format`` to ``out``, one per line; the number written."""
    written = 0
    for record in records:
        if output_format == "atna-xml":
            out.write(audit_message_xml(record, source))
        else:
            out.write(_RECORD.dump_json(record))
        out.write(b"\n")
        written += 1
    return written
