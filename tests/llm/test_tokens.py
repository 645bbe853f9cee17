from pathlib import Path

import pytest

from app import tokens


def test_encodings_load_offline_from_bundled_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    tokens.get_encoding.cache_clear()
    try:
        cl100k = tokens.get_encoding("cl100k_base")
        o200k = tokens.get_encoding("o200k_base")
    finally:
        tokens.get_encoding.cache_clear()
    assert cl100k.encode("hello world") == [15339, 1917]
    assert o200k.encode("hello world") == [24912, 2375]
    assert len(list((tmp_path / "empty-cache").iterdir())) == 2


def test_count_tokens_ignores_special_token_text() -> None:
    assert tokens.count_tokens("<|endoftext|>") > 1


def test_unknown_encoding_is_a_clear_error() -> None:
    with pytest.raises(Exception, match="unknown token encoding"):
        tokens.get_encoding("p50k_nope")
