"""What the configured model backend needs to read: weights here (transformers), an export (ONNX Runtime), a model
server that answers and completes (vLLM), or nothing (demo)."""

from __future__ import annotations

from radtrace.config import Settings
from radtrace.errors import ModelServerError, RadtraceError
from radtrace.preflight.check import Check

__all__ = ["MODEL_SERVER_CHECK_S", "check_model_weights"]


#: The start-up check of a vLLM server (``GET /health``, then ``GET /v1/models``; connect, headers, bodies), and then
#: its one-token completion, each end within this: a server that drips its answers cannot hold the start of serve,
#: listen or worker, or serve's supervisor, longer than twice this (a model list is read up to the client's 8 MiB
#: cap, a health answer and a one-token completion up to 64 KiB).
MODEL_SERVER_CHECK_S = 3.0


def _vllm_server(settings: Settings) -> Check:
    """A vLLM backend needs its server to serve, not weights on this machine: its health check, as the worker's
    circuit breaker asks it (``GET /health``: 2xx up, 429 or 5xx down, any other answer falls back to the model list),
    then its model list, to name what it serves. Asked through the client's bounded requests
    (:func:`radtrace.model.backends.vllm.serving_models`): one deadline for both, a size cap.

    A vLLM whose engine died while its API process lives still lists its models but answers 5xx to ``/health``:
    before, this check asked only the model list and passed it. A *wedged* engine (a GPU hang, a stuck scheduler)
    answers both and completes nothing: the served model is then asked for one token of one tiny picture, as the
    worker's breaker asks a suspect server (:func:`radtrace.model.backends.vllm.completion_problem`), under its own
    deadline of :data:`MODEL_SERVER_CHECK_S`; no answer, 429/5xx or an empty one is a warning (serve's supervisor
    starts the GPU worker once it completes)."""
    from radtrace.model.backends.vllm import completion_problem, serving_models
    from radtrace.model.profiles import get_profile
    from radtrace.model.reader import effective_budget

    url = (settings.model.vllm_url or "").rstrip("/")
    key = settings.model.vllm_api_key
    try:
        served = serving_models(
            url, api_key=key.get_secret_value() if key is not None else None, timeout_s=MODEL_SERVER_CHECK_S
        )
    except ModelServerError as exc:  # answered 429 or 5xx, or not in time
        return Check("model server", "warning", f"{exc.reason}; inference waits until it serves (model.vllm_url)")
    except RadtraceError as exc:
        return Check("model server", "warning", f"vLLM at {settings.model.vllm_url} does not answer as a model server "
                     f"({exc.reason}); inference waits for it (model.vllm_url)")  # fmt: skip
    model = settings.model.vllm_model or (served[0] if len(served) == 1 else None)
    if model is not None:  # several served and none chosen: the worker refuses to guess, and says so at its read
        budget = effective_budget(settings.model, get_profile(settings.model.profile))
        problem = completion_problem(url, model=model, min_pixels=budget.min_pixels, max_pixels=budget.max_pixels,
                                     api_key=key.get_secret_value() if key is not None else None,
                                     timeout_s=MODEL_SERVER_CHECK_S)  # fmt: skip
        if problem is not None:
            return Check("model server", "warning", f"{problem}; inference waits until it reads (model.vllm_url)")
    return Check("model server", "ok", f"vLLM at {settings.model.vllm_url} serves {', '.join(served) or 'no model'}")


def check_model_weights(settings: Settings) -> Check:
    """Whether the configured backend can read: ``ok``, or a ``warning`` saying what is missing.

    transformers needs the weights here; ONNX Runtime an export (its manifest and files); vLLM a server that answers;
    the demo backend nothing.
    """
    if settings.model.backend == "demo":
        return Check("model", "ok", "DEMO: recorded model texts replayed; every draft is marked as a demo")
    if settings.model.backend == "vllm":
        return _vllm_server(settings)
    if settings.model.backend == "onnxruntime":
        return _onnx_export(settings)
    path = settings.model.path
    if path is not None:
        if not path.is_dir():
            tilde = " ('~' is not expanded inside quotes: write the whole path)" if str(path).startswith("~") else ""
            return Check("model weights", "warning", f"model.path {path} does not exist (RADTRACE_MODEL__PATH){tilde}")
        from radtrace.model.loading import checkpoint_problem, missing_checkpoint_files

        if missing := missing_checkpoint_files(path):
            return Check("model weights", "warning", f"model.path {path} lacks {', '.join(missing)}; the GPU worker "
                         "cannot load it and is restarted until it can (RADTRACE_MODEL__PATH)")  # fmt: skip
        if (problem := checkpoint_problem(path)) is not None:
            return Check("model weights", "warning", f"model.path {path} cannot be loaded: {problem}; inference waits "
                         "until the files there change (RADTRACE_MODEL__PATH)")  # fmt: skip
        return Check("model weights", "ok", f"{path}")
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(settings.model.repo_id, "config.json", revision=settings.model.revision)
    if isinstance(cached, str):
        return Check("model weights", "ok", f"{settings.model.repo_id} in the local Hugging Face cache")
    return Check(
        "model weights",
        "warning",
        f"{settings.model.repo_id} is not in the local cache and model.path is not set; "
        "inference will not start until the weights are provided",
    )


def _onnx_export(settings: Settings) -> Check:
    """ONNX Runtime reads the export at ``model.path``: its manifest and the files it names (not hashed here; the
    worker does that when it loads). An export carries no transformers weights, so the transformers check said a
    good export 'lacks model.safetensors', and serve never started its worker."""
    from radtrace.errors import ModelFilesError, ModelLoadError
    from radtrace.model.onnx.manifest import read_manifest

    path = settings.model.path
    if path is None:  # refused by the settings already; said plainly should that change
        return Check("model weights", "warning", "model.path is not set (RADTRACE_MODEL__PATH)")
    try:
        read_manifest(path, verify=False)
    except ModelFilesError as exc:
        return Check("model weights", "warning", f"model.path {path} cannot be loaded: {exc.reason}; inference "
                     "waits until the files there change (RADTRACE_MODEL__PATH)")  # fmt: skip
    except ModelLoadError as exc:
        return Check("model weights", "warning", exc.reason)
    return Check("model weights", "ok", f"ONNX export {path}")
