from pathlib import Path

import pytest
from pydantic import BaseModel

from app.settings import Settings
from tests.conftest import ROOT


def _env_names(model: type[BaseModel], prefix: str = "KB_") -> set[str]:
    names = set()
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= _env_names(annotation, f"{prefix}{name.upper()}__")
        else:
            names.add(f"{prefix}{name.upper()}")
    return names


def test_env_example_documents_every_setting() -> None:
    text = (ROOT / ".env.example").read_text()
    missing = sorted(n for n in _env_names(Settings) if f"{n}=" not in text)
    assert not missing, f".env.example lacks {missing}"


def test_nested_env_variables_configure_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KB_LLM__BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("KB_RETRIEVAL__TOP_K", "7")
    monkeypatch.setenv("KB_LLM__PRICES", '{"m": {"input_per_million": 1, "output_per_million": 2}}')
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.data_dir == tmp_path and settings.retrieval.top_k == 7
    assert settings.llm.resolved_provider() == "openai"
    assert settings.llm.prices["m"].output_per_million == 2


def test_offline_default_provider_without_key() -> None:
    assert Settings(_env_file=None).llm.resolved_provider() == "extractive"  # type: ignore[call-arg]
