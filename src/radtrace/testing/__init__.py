"""Synthetic test material built offline: chest X-ray DICOM studies and a tiny Qwen2.5-VL model.

Shipped inside the package so that the CLI (``radtrace model make-tiny``), the benchmarks and the
tests all build the same material. Nothing here contains or downloads patient data or weights.
"""
