"""Inference backends behind :class:`radtrace.model.backends.base.Backend` (transformers, vLLM; ONNX Runtime later)."""
