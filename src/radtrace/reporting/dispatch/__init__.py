"""Delivering drafts: C-STORE to PACS, HL7 over MLLP to a RIS, files to a drop folder, through the outbox."""
