"""ONNX export of Qwen2.5-VL-class checkpoints and what the ONNX Runtime backend needs to read them.

An export directory holds three graphs (``vision.onnx``, ``embed.onnx``, ``decoder.onnx`` with its KV cache,
each with its weights in a ``.onnx.data`` file beside it), the checkpoint's tokenizer and processor files, and
``radtrace-onnx.json``: the manifest with every file's sha256, the source weights' sha256, opset, dtype and the
model dimensions the greedy loop needs. :mod:`.export` writes it (torch and onnx needed); :mod:`.manifest`
checks it and :mod:`.positions` computes the index arrays the graphs take (numpy only).
"""
