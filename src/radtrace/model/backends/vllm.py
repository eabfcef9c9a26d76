"""A client for a vLLM server's OpenAI-compatible chat API (``POST /v1/chat/completions``).

Each picture is sent already resized (PNG data URL) and ``mm_processor_kwargs`` caps the server's pixel
budget, so vLLM neither resizes again nor reserves memory for 16k-token images. Greedy (temperature 0).
The ``<think>`` text must reach the parser intact: run the server *without* a reasoning parser; where one is
on anyway, its ``reasoning_content`` is put back inside ``<think> … </think>``.

Errors: an unreachable server is :class:`PeerUnavailableError`, a timeout, a 5xx or 429 or a malformed
reply is :class:`ModelError` (both retryable); any other refusal is :class:`ModelRequestError` (permanent).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from io import BytesIO
from typing import Any

import httpx

from radtrace.errors import ModelError, ModelRequestError, PeerUnavailableError
from radtrace.model.backends.base import Backend, Generation
from radtrace.model.image import MERGED_PATCH, PreparedPicture
from radtrace.model.profiles.base import Profile
from radtrace.model.reading import ModelIdentity
from radtrace.model.study import StudyInput

__all__ = ["VllmBackend", "data_url"]


def data_url(picture: PreparedPicture) -> str:
    """The picture as a ``data:image/png;base64,…`` URL (lossless)."""
    buffer = BytesIO()
    picture.image().save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


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
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=httpx.Timeout(timeout_s), transport=transport
        )
        self._model = model

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()

    @property
    def model(self) -> str:
        """The served model name: as configured, else the server's only model.

        Raises:
            PeerUnavailableError, ModelError, ModelRequestError: as for :meth:`generate`.
        """
        if self._model is None:
            listed = self._request("GET", "/v1/models")
            names = [str(entry.get("id")) for entry in listed.get("data", []) if isinstance(entry, dict)]
            if len(names) != 1:
                raise ModelRequestError(
                    f"vLLM server at {self.base_url} serves {len(names)} models ({', '.join(names) or 'none'}); "
                    "set model.vllm_model to choose one"
                )
            self._model = names[0]
        return self._model

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
        reply = self._request("POST", "/v1/chat/completions", json=payload)
        elapsed = time.perf_counter() - started
        try:
            choice = reply["choices"][0]
            message = choice["message"]
            text = message.get("content") or ""
            reasoning = message.get("reasoning_content") or message.get("reasoning")
            if reasoning:
                text = f"<think>{reasoning}</think>{text}"
            usage = reply.get("usage") or {}
            generated = int(usage.get("completion_tokens", 0))
            prompt = int(usage.get("prompt_tokens", 0))
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"vLLM server at {self.base_url} sent a malformed completion: {exc!r}") from exc
        image_tokens = sum((p.rows // MERGED_PATCH) * (p.columns // MERGED_PATCH) for p in study.pictures)
        return Generation(
            text=str(text),
            prompt_tokens=prompt,
            image_tokens=image_tokens,
            generated_tokens=generated,
            hit_token_limit=choice.get("finish_reason") == "length",
            generate_s=elapsed,
        )

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ModelError(
                f"vLLM server at {self.base_url} did not answer {path} within {self.timeout_s:g} s"
            ) from exc
        except httpx.TransportError as exc:
            raise PeerUnavailableError(f"vLLM server at {self.base_url} is not reachable: {exc}") from exc
        if response.status_code == 429 or response.status_code >= 500:
            raise ModelError(f"vLLM server at {self.base_url} answered {response.status_code} to {path}")
        if response.status_code >= 400:
            detail = response.text[:300]
            raise ModelRequestError(
                f"vLLM server at {self.base_url} refused {path} with {response.status_code}: {detail}"
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise ModelError(f"vLLM server at {self.base_url} sent a reply that is not JSON") from exc
        if not isinstance(body, dict):
            raise ModelError(f"vLLM server at {self.base_url} sent a reply that is not a JSON object")
        return body
