"""Any text in an audit row (peer AE titles, model text, UIDs with control characters, megabytes, undecodable
bytes kept as surrogates) becomes one syslog message an ATNA repository takes whole: RFC 5424 structure intact,
within what rsyslog accepts by default (8096 bytes), the audit message valid against PS3.15 A.5.1.1."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from radtrace.audit.atna.forwarder import AtnaForwarder, CursorFile
from radtrace.audit.atna.message import AuditSource, validate_audit_message
from radtrace.audit.atna.syslog import BOM, UdpTransport
from radtrace.audit.events import EventType, Outcome
from radtrace.audit.queries import AuditRecord
from radtrace.config import AtnaSettings

pytestmark = pytest.mark.unit

RSYSLOG_DEFAULT_MAX = 8096  # rsyslog's maxMessageSize as shipped: what a hospital's receiver takes unless raised

# RFC 5424 section 6: HEADER SP STRUCTURED-DATA SP MSG, every header field PRINTUSASCII; our one SD-ELEMENT with
# PARAM-VALUEs in which '"', '\' and ']' only appear escaped.
_VALUE = r'(?:[^"\\\]]|\\["\\\]])*'
SYSLOG = re.compile(
    rb"<(\d{1,3})>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) ([\x21-\x7e]{1,255}) ([\x21-\x7e]{1,48}) "
    rb"([\x21-\x7e]{1,128}) IHE\+RFC-3881 "
    + rf'\[radtrace@32473 seq="({_VALUE})" hash="({_VALUE})"\] '.encode()
    + re.escape(BOM)
    + rb"(.*)",
    re.DOTALL,
)

HOSTILE = st.sampled_from(['"', "]", "\\", "<", "&", "\x00", "\x1b", "\n", "\ud800", "\udcff", "\ufffe", "\u2028"])
TEXT = st.builds(
    lambda text, times: text * times,
    st.text(st.one_of(st.characters(), HOSTILE), max_size=40),
    st.sampled_from([1, 1, 30, 3000, 300_000]),  # up to megabytes, as a row edited in the database may hold
)
KINDS = st.sampled_from(list(EventType))
SOURCE = AuditSource("radtrace-test", enterprise_site_id="General Hospital", host="10.0.0.5")


def _record(kind: EventType, text: str, where: set[str]) -> AuditRecord:
    def maybe(field: str, normal: str | None) -> str | None:
        return text if field in where else normal

    return AuditRecord(
        seq=7, recorded_at=datetime(2026, 12, 5, 9, 0, tzinfo=UTC), event_type=kind.value,
        dicom_event_id=kind.dicom.code, outcome=Outcome.SERIOUS_FAILURE.value,
        actor_ae=maybe("ae", "MODALITY1"), actor_host=maybe("host", "192.168.1.20"), actor_user=maybe("user", None),
        actor_process=maybe("process", "radtrace@host:1") or "", study_uid=maybe("study", "1.2.3"),
        accession=maybe("accession", "ACC1"), patient_id=maybe("patient", None), model_name=None, model_version=None,
        labels=(), prev_hash="0" * 64, hash=maybe("hash", "ab" * 32) or "",
        payload={key: text for key in ("reason", "destination", "hold_reason") if key in where}
        | ({"filters": {"study_uid": text, "accession": text}} if "filters" in where else {}),
        recorded_at_unreadable=None,
    )  # fmt: skip


FIELDS = ["ae", "host", "user", "process", "study", "accession", "patient", "hash", "reason", "destination",
          "hold_reason", "filters"]  # fmt: skip


@pytest.fixture(scope="module")
def forwarder(tmp_path_factory: pytest.TempPathFactory) -> AtnaForwarder:
    """A forwarder only asked to frame rows (its store is never read)."""
    cursor = CursorFile(Path(tmp_path_factory.mktemp("atna")) / "cursor.json")
    atna = AtnaSettings(enabled=True, transport="udp", host="127.0.0.1", port=514)
    return AtnaForwarder(None, atna, cursor, UdpTransport("127.0.0.1", 514), SOURCE)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kind=KINDS, text=TEXT, where=st.sets(st.sampled_from(FIELDS), min_size=1))
def test_any_text_in_a_row_gives_one_bounded_rfc5424_message_with_a_valid_audit_message(
    forwarder: AtnaForwarder, kind: EventType, text: str, where: set[str]
) -> None:
    framed = forwarder._message(_record(kind, text, where))
    assert len(framed) <= RSYSLOG_DEFAULT_MAX
    parsed = SYSLOG.fullmatch(framed)
    assert parsed is not None, framed[:300]
    assert parsed.group(6) == b"7"  # the seq, whatever the hash holds
    xml = parsed.group(8)
    xml.decode("utf-8")  # MSG-UTF8: strict
    message = etree.fromstring(xml)
    validate_audit_message(message)
    event_type = {c.get("csd-code") for c in message.iterfind("EventIdentification/EventTypeCode")}
    assert kind.value in event_type  # the event itself, cut where it must be, not a stand-in alert
    # the row is still named in the message, so a repository recognises a repeat
    assert message.xpath("ParticipantObjectIdentification[@ParticipantObjectID='urn:radtrace:audit:7']")


def test_a_row_of_megabytes_keeps_its_event_and_says_where_it_was_cut(forwarder: AtnaForwarder) -> None:
    """Before: the XML of a row with 2 MB of '"' in its fields was 79 kB, a frame rsyslog cut at 8096 bytes."""
    framed = forwarder._message(_record(EventType.INSTANCE_REJECTED, '"' * 2_000_000, set(FIELDS)))
    assert len(framed) <= RSYSLOG_DEFAULT_MAX
    message = etree.fromstring(framed.split(BOM, 1)[1])
    assert message.find("EventIdentification/EventID").get("csd-code") == EventType.INSTANCE_REJECTED.dicom.code
    reason = message.findtext("EventIdentification/EventOutcomeDescription")
    assert reason.startswith('"')
    assert reason.endswith("\u2026")  # cut, and visibly so
