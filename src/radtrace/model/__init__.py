"""Image preparation, model profiles, inference backends and model identity (no networking, no reports)."""
