"""A client for a vLLM server's OpenAI-compatible chat API (``POST /v1/chat/completions``).

Each picture is sent already resized (PNG data URL) and ``mm_processor_kwargs`` caps the server's pixel
budget, so vLLM neither resizes again nor reserves memory for 16k-token images. Greedy (temperature 0).
The ``<think>`` text must reach the parser intact: run the server *without* a reasoning parser; where one is
on anyway, its ``reasoning_content`` is put back inside ``<think> … </think>``.

Errors: an unreachable server is :class:`PeerUnavailableError`, a timeout, a 5xx or 429 or a malformed
reply is :class:`ModelError` (both retryable); any other refusal is :class:`ModelRequestError` (permanent).

Bounded per request, whatever the server does (:mod:`radtrace.model.backends.vllm_http`): the whole request ends
at ``timeout_s`` and at most :data:`MAX_REPLY_BYTES` of reply are read.
"""

from __future__ import annotations

import base64
import functools
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from typing import Any, Final

import httpx
from PIL import Image

from radtrace.errors import ModelError, ModelRequestError, ModelServerError, PeerUnavailableError
from radtrace.model.backends.base import Backend, Generation
from radtrace.model.backends.vllm_http import MAX_REPLY_BYTES, VllmHttp, json_reply, quoted
from radtrace.model.image import MERGED_PATCH, PreparedPicture
from radtrace.model.profiles.base import Profile
from radtrace.model.reading import ModelIdentity
from radtrace.model.study import StudyInput

__all__ = [
    "COMPLETIONS_PATH",
    "HEALTH_PATH",
    "MAX_REPLY_BYTES",
    "PROBE_MAX_TOKENS",
    "PROBE_TIMEOUT_S",
    "VllmBackend",
    "completion_problem",
    "data_url",
    "serving_models",
]

#: The longest a health check of the server (``/health``, and the model list where it has none) may take in all,
#: whatever ``model.request_timeout_s`` is.
PROBE_TIMEOUT_S: Final = 10.0
#: vLLM's engine health check: 200 while its engine runs, 5xx once the engine is dead though the API process still
#: answers (500 in vLLM's V0 engine, 503 since vLLM PR #24897, 2025-09), no body. Other OpenAI-compatible servers
#: may lack it (404).
HEALTH_PATH: Final = "/health"
#: What reads ask, and the completion probe of a suspect server (:meth:`VllmBackend.unavailable`).
COMPLETIONS_PATH: Final = "/v1/chat/completions"
#: The completion probe's size: one token for one tiny picture and a few words, so it costs the server next to
#: nothing and answers within the probe's deadline on any engine that reads at all.
PROBE_MAX_TOKENS: Final = 1
_PROBE_PICTURE_SIDE: Final = 56  # a mid-grey square: the server's pixel budget (min_pixels) decides its tokens
_PROBE_PROMPT: Final = "Is this an image? Answer yes or no."
_HEALTH_BODY_BYTES: Final = 64 * 1024  # a health answer is empty; more is read no further
_PROBE_REPLY_BYTES: Final = 64 * 1024  # a one-token completion is a few hundred bytes; a larger one is no answer


def _count(value: object) -> int:
    """A token count from the server: a whole number of at least 0 (JSON allows Infinity, -5, 1e400)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 2**53:
        raise ValueError(f"token count {quoted(value, 32)} is not a count")
    return int(value)


def data_url(picture: PreparedPicture) -> str:
    """The picture as a ``data:image/png;base64,…`` URL (lossless)."""
    return _png_url(picture.image())


def _png_url(image: Image.Image) -> str:
    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@functools.cache
def _probe_picture() -> str:
    """The completion probe's picture (made once): a small grey square, so the probe goes the way a read goes
    (image preprocessing, vision encoder, decoding) at a fraction of its cost."""
    return _png_url(Image.new("L", (_PROBE_PICTURE_SIDE, _PROBE_PICTURE_SIDE), 128))


class VllmBackend(Backend):
    """Generate on a vLLM server; studies of a batch are sent as concurrent requests."""

    name = "vllm"

    def __init__(
        self,
        base_url: str,
        *,
        max_new_tokens: int,
        min_pixels: int,
        max_pixels: int,
        model: str | None = None,
        api_key: str | None = None,
        timeout_s: float = 300.0,
        revision: str | None = None,
        max_concurrency: int = 8,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        if self.base_url.endswith("/v1"):
            self.base_url = self.base_url[: -len("/v1")]
        self.max_new_tokens = max_new_tokens
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        self.timeout_s = timeout_s
        self.revision = revision
        self.max_concurrency = max(1, max_concurrency)
        self._http = VllmHttp(self.base_url, timeout_s=timeout_s, api_key=api_key, transport=transport)
        self._model = model
        # A completion timed out or came back empty since the last completion probe answered: the next health check
        # asks for a one-token completion too (see unavailable()); set from the reads' threads, read by the probe.
        self._suspect = False

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    @property
    def model(self) -> str:
        """The served model name: as configured, else the server's only model.

        Raises:
            PeerUnavailableError, ModelError, ModelRequestError: as for :meth:`generate`.
        """
        if self._model is None:
            names = self.served_models()
            if len(names) != 1:
                shown = ", ".join(quoted(name, 64) for name in names[:4]) + (", …" if len(names) > 4 else "")
                raise ModelRequestError(
                    f"vLLM server at {self.base_url} serves {len(names)} models ({shown or 'none'}); "
                    "set model.vllm_model to choose one"
                )
            self._model = names[0]
        return self._model

    def served_models(self, *, timeout_s: float | None = None) -> list[str]:
        """The model names the server lists (``GET /v1/models``), under the same bounds as a completion: the whole
        request ends at ``timeout_s`` (default the request timeout) and at most :data:`MAX_REPLY_BYTES` are read.

        Raises:
            PeerUnavailableError, ModelError, ModelRequestError: as for :meth:`generate`.
        """
        listed = self._http.request("GET", "/v1/models", timeout_s=timeout_s)
        entries = listed.get("data")
        return (
            [str(entry.get("id")) for entry in entries if isinstance(entry, dict)] if isinstance(entries, list) else []
        )

    def unavailable(self) -> str | None:
        """Why the server cannot read now, or None when it can: what the worker's circuit breaker
        (:mod:`radtrace.worker.breaker`) probes after a batch the server failed as a whole, and while it holds reads.

        :meth:`health` first: not reachable, 429 or 5xx to ``/health`` or no answer in time is a server that cannot
        read. A server that says it can is still asked for a real completion of :data:`PROBE_MAX_TOKENS` token
        (:meth:`_completion_problem`) where its word is not enough: when a completion timed out or came back empty
        since the last probe answered (an engine that is wedged answers ``/health`` all the same), and always on a
        server without ``/health``, whose model list says only that its API process runs. One deadline for all of
        it: min(request timeout, :data:`PROBE_TIMEOUT_S`). A server that answers, if not as expected (a model list
        or a probe refused with 4xx, a model list malformed), is available here: the reads will say what is wrong.
        """
        seconds = min(self.timeout_s, PROBE_TIMEOUT_S)
        ends = time.monotonic() + seconds
        try:
            listed = self.health(timeout_s=seconds)
        except (PeerUnavailableError, ModelServerError) as exc:
            return exc.reason
        except (ModelError, ModelRequestError):
            return None
        if listed is None and not self._suspect:
            return None
        return self._completion_problem("its model list" if listed is not None else HEALTH_PATH, seconds, ends)

    def _completion_problem(self, judged_by: str, seconds: float, ends: float) -> str | None:
        """Ask for one token of one tiny picture by ``ends``: why the server did not give it (it answers
        ``judged_by`` but ...), or None (it did, or refused with 4xx: a read would be refused alike)."""
        but = f"vLLM server at {self.base_url} answers {judged_by} but"
        late = f"{but} completions time out: a {PROBE_MAX_TOKENS}-token completion did not answer within {seconds:g} s"
        if self._model is None:  # no read has named the model yet (the reads ask the model list for it)
            return None
        left = ends - time.monotonic()
        if left <= 0:
            return late
        content = [
            {"type": "image_url", "image_url": {"url": _probe_picture()}},
            {"type": "text", "text": _PROBE_PROMPT},
        ]
        payload = {
            "model": self._model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": PROBE_MAX_TOKENS,
            "temperature": 0.0,
            "mm_processor_kwargs": {"min_pixels": self.min_pixels, "max_pixels": self.max_pixels},
        }
        try:
            status, _, data = self._http.fetch(
                "POST", COMPLETIONS_PATH, timeout_s=left, limit=_PROBE_REPLY_BYTES, json=payload
            )
        except ModelServerError:  # fetch raises it for no answer in time only
            return late
        except PeerUnavailableError as exc:
            return exc.reason
        except ModelError as exc:  # broken off, or a one-token completion larger than 64 KiB
            return f"{but} its completions are broken: {exc.reason}"
        if status == 429 or status >= 500:
            return f"{but} answered {status} to a {PROBE_MAX_TOKENS}-token completion"
        if status >= 400:
            return None
        if (empty := _empty_probe_reply(data)) is not None:
            return f"{but} its completions are empty: a {PROBE_MAX_TOKENS}-token completion came back {empty}"
        self._suspect = False
        return None

    def health(self, *, timeout_s: float, models: bool = False) -> list[str] | None:
        """Whether the server can read now, as the worker's circuit breaker (:meth:`unavailable`) and the start-up
        checks (:func:`serving_models`) ask it; the models it lists where they were asked.

        Asks :data:`HEALTH_PATH` first: a vLLM whose engine died while its API process lives still lists its models
        but answers 5xx there. 2xx: it can read (None is returned, unless ``models`` asks for the model list too).
        429 or 5xx: it cannot. Any other answer (404 on other OpenAI-compatible servers, a gateway's 401, a redirect)
        means it has no health check: its model list is asked instead, and returned. Both requests together end at
        ``timeout_s``; at most 64 KiB of a health answer and :data:`MAX_REPLY_BYTES` of a model list are read.

        Raises:
            ModelServerError: 429 or 5xx (``answered 503 to /health: its engine is not serving``), or no answer in
                time.
            PeerUnavailableError: not reachable.
            ModelError, ModelRequestError: it answered, not as expected: an answer broken off, a model list refused,
                too large or not JSON.
        """
        ends = time.monotonic() + timeout_s
        status, _, _ = self._http.fetch("GET", HEALTH_PATH, timeout_s=timeout_s, limit=_HEALTH_BODY_BYTES, cut=True)
        if 200 <= status < 300 and not models:
            return None
        if status == 429 or status >= 500:
            raise ModelServerError(
                f"vLLM server at {self.base_url} answered {status} to {HEALTH_PATH}: its engine is not serving"
            )
        left = ends - time.monotonic()
        if left <= 0:
            raise ModelServerError(
                f"vLLM server at {self.base_url} did not answer its health checks within {timeout_s:g} s"
            )
        try:
            return self.served_models(timeout_s=left)
        except ModelServerError as exc:
            if not isinstance(exc.__cause__, httpx.TransportError):  # 429 or 5xx
                raise
            raise ModelServerError(  # the time left is no figure to show: the deadline was the whole check's
                f"vLLM server at {self.base_url} did not answer /v1/models within {timeout_s:g} s "
                f"(one deadline for {HEALTH_PATH} and the model list)"
            ) from exc

    def identity(self, profile: Profile) -> ModelIdentity:
        """See :meth:`Backend.identity`; the weights hash is unknown to a client and left out."""
        return ModelIdentity(
            profile=profile.name,
            profile_version=profile.version,
            backend="vllm",
            model_name=profile.model_name,
            source=f"{self.base_url} ({self.model})",
            revision=self.revision,
            weights_sha256=None,
            dtype="server",
            device="remote",
            prompt=profile.prompt,
            generation={
                "max_new_tokens": self.max_new_tokens,
                "temperature": 0.0,
                "min_pixels": self.min_pixels,
                "max_pixels": self.max_pixels,
            },
        )

    def generate(self, studies: Sequence[StudyInput], profile: Profile) -> list[Generation]:
        """One chat completion per study, up to ``max_concurrency`` at a time."""
        model = self.model
        if len(studies) == 1:
            return [self._one(studies[0], profile, model)]
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(studies))) as pool:
            return list(pool.map(lambda study: self._one(study, profile, model), studies))

    def _one(self, study: StudyInput, profile: Profile, model: str) -> Generation:
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": data_url(picture)}} for picture in study.pictures
        ]
        content.append({"type": "text", "text": profile.prompt})
        payload = {
            "model": model,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": self.max_new_tokens,
            "temperature": 0.0,
            "skip_special_tokens": True,
            "mm_processor_kwargs": {"min_pixels": self.min_pixels, "max_pixels": self.max_pixels},
        }
        started = time.perf_counter()
        try:
            reply = self._http.request("POST", COMPLETIONS_PATH, json=payload)
        except ModelServerError as exc:
            if isinstance(exc.__cause__, httpx.TransportError):  # no answer in time: maybe wedged, probe it
                self._suspect = True
            raise
        elapsed = time.perf_counter() - started
        if "choices" not in reply and ("error" in reply or reply.get("object") == "error"):
            error = reply.get("error")
            said = error.get("message", error) if isinstance(error, dict) else (error or reply.get("message"))
            raise ModelError(f"vLLM server at {self.base_url} answered with an error: {quoted(said)}")
        try:
            choice = reply["choices"][0]
            message = choice["message"]
            text = message.get("content") or ""
            reasoning = message.get("reasoning_content") or message.get("reasoning")
            if not isinstance(text, str) or not isinstance(reasoning or "", str):
                raise TypeError("the message content is not text")
            if reasoning:
                text = f"<think>{reasoning}</think>{text}"
            usage = reply.get("usage") or {}
            generated = _count(usage.get("completion_tokens", 0))
            prompt = _count(usage.get("prompt_tokens", 0))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"vLLM server at {self.base_url} sent a malformed completion: {exc!r}") from exc
        if not text.strip():
            # nothing to read, never a draft: the server's fault (an engine that answers at once with nothing reads
            # nothing for any study), retried as such, and the server probed
            self._suspect = True
            raise ModelServerError(
                f"vLLM server at {self.base_url} sent an empty completion ({generated} tokens, "
                f"finish reason {quoted(choice.get('finish_reason'), 32)})"
            )
        image_tokens = sum((p.rows // MERGED_PATCH) * (p.columns // MERGED_PATCH) for p in study.pictures)
        return Generation(
            text=str(text),
            prompt_tokens=prompt,
            image_tokens=image_tokens,
            generated_tokens=generated,
            hit_token_limit=choice.get("finish_reason") == "length",
            generate_s=elapsed,
        )


def _empty_probe_reply(data: bytes) -> str | None:
    """What is missing from a completion probe's reply ("with no completion in it", "with no token"), or None: a
    message with at least one token generated (or, where the server counts none, some text)."""
    try:
        reply = json_reply(data, "")
        message = reply["choices"][0]["message"]
        usage = reply.get("usage")
        tokens = usage.get("completion_tokens") if isinstance(usage, dict) else None
    except (ModelError, KeyError, IndexError, TypeError, AttributeError):
        return "with no completion in it"
    if not isinstance(message, dict):
        return "with no message in it"
    if isinstance(tokens, int) and not isinstance(tokens, bool):
        return None if tokens >= 1 else "with no token"
    text = message.get("content")
    return None if isinstance(text, str) and text else "with no text"


def completion_problem(
    base_url: str, *, model: str, min_pixels: int, max_pixels: int, api_key: str | None = None, timeout_s: float
) -> str | None:
    """Why a vLLM server whose health check passed does not complete one token of one tiny picture within
    ``timeout_s`` (wedged: "... but completions time out ...", 429/5xx, empty, broken), or None when it does (or
    refuses the request with 4xx: a read would say why). The breaker's completion probe (:meth:`VllmBackend.
    unavailable`) for the start-up checks of serve, listen and worker and serve's supervisor (:mod:`radtrace.
    preflight`); at most 64 KiB of reply read."""
    client = VllmBackend(base_url, max_new_tokens=PROBE_MAX_TOKENS, min_pixels=min_pixels, max_pixels=max_pixels,
                         model=model, api_key=api_key, timeout_s=timeout_s)  # fmt: skip
    try:
        return client._completion_problem("its health check", timeout_s, time.monotonic() + timeout_s)
    finally:
        client.close()


def serving_models(base_url: str, *, api_key: str | None = None, timeout_s: float = PROBE_TIMEOUT_S) -> list[str]:
    """The models a vLLM server at ``base_url`` lists, once its health check says it can read (the start-up checks of
    serve, listen and worker: :mod:`radtrace.preflight`): :meth:`VllmBackend.health` as the worker's circuit breaker
    asks it, and the model list after a 2xx there. One deadline for all of it (a server that drips its answer cannot
    hold the caller longer than ``timeout_s``), at most :data:`MAX_REPLY_BYTES` of a model list read.

    Raises:
        ModelServerError: 429 or 5xx to ``/health`` (its engine is not serving) or to the model list, or no answer
            in time.
        PeerUnavailableError: not reachable.
        ModelError, ModelRequestError: a reply that is broken off, too large or not JSON; any other refusal.
    """
    client = VllmBackend(
        base_url, max_new_tokens=1, min_pixels=1, max_pixels=1, api_key=api_key, timeout_s=timeout_s
    )  # generation settings unused: only the health check and the model list are asked for
    try:
        return client.health(timeout_s=timeout_s, models=True) or []
    finally:
        client.close()
