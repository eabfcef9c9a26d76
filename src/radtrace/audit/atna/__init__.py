"""IHE ATNA: radtrace's audit trail as DICOM PS3.15 A.5 audit messages, sent to an audit record repository.

:mod:`.message` builds and validates one message per audit row; :mod:`.syslog` frames it (RFC 5424) and sends it
over TLS (RFC 5425) or UDP (RFC 5426); :mod:`.forwarder` walks the log in order behind a durable cursor.
"""
