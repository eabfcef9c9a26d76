"""DICOM SR, HL7 ORU and FHIR drafts, finding codes and dispatch clients (never calls the model)."""
