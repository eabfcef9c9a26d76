"""Image preparation, model profiles, inference backends and model identity (no networking, no reports).

- :mod:`~radtrace.model.image`: DICOM pixels to the model's picture (modality LUT, VOI, inversion, 8 bit, RGB,
  resize to the pixel budget), every step recorded; :mod:`~radtrace.model.views`: which image is read.
- :mod:`~radtrace.model.study`: a study's instances to a :class:`~radtrace.model.study.StudyInput` or a skip.
- :mod:`~radtrace.model.profiles`: prompt, budget, labels and parser per model family (``nv-reason-cxr``,
  ``deepmedix-r1``); :mod:`~radtrace.model.parsing` holds the shared text rules.
- :mod:`~radtrace.model.backends`: ``transformers`` (in process) and ``vllm`` (client) behind one interface.
- :mod:`~radtrace.model.reader`: settings in, a :class:`~radtrace.model.reading.Reading` or a skip out.

Nothing here imports torch or transformers at import time.
"""
