"""DICOM front door: C-ECHO/C-STORE SCP, durable spool and study completion (no torch, no model)."""
