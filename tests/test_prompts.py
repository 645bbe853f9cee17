from pathlib import Path

import pytest

from prompts.registry import PromptFileError, PromptLookupError, PromptRegistry, parse_ref


def test_answer_prompt_is_versioned_and_renders() -> None:
    registry = PromptRegistry()
    prompt = registry.get("answer@v1")
    assert prompt.id == "answer@v1" and registry.get("answer").version >= 1
    rendered = prompt.render(question="Why?", sources="[1] Because.")
    assert "Question: Why?" in rendered.user and rendered.prompt_id == "answer@v1"


@pytest.mark.parametrize(
    ("ref", "parsed"), [("answer@v2", ("answer", 2)), ("answer@3", ("answer", 3)), ("answer", ("answer", None))]
)
def test_parse_ref(ref: str, parsed: tuple) -> None:
    assert parse_ref(ref) == parsed


def test_unknown_version_lists_what_exists() -> None:
    with pytest.raises(PromptLookupError, match="answer@v1"):
        PromptRegistry().get("answer@v42")


def _write(root: Path, body: str) -> None:
    (root / "demo").mkdir(parents=True)
    (root / "demo" / "v1.yaml").write_text(body)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("name: demo\nversion: 1\nsystem: s\ntemplate: '{a}'\nvariables: [a]\nsurprise: 1\n", "unknown keys"),
        ("name: demo\nversion: 1\nsystem: s\ntemplate: '{a} {b}'\nvariables: [a]\n", "declares"),
        ("name: other\nversion: 1\nsystem: s\ntemplate: '{a}'\nvariables: [a]\n", "must match its path"),
        ("name: demo\nversion: 1\ntemplate: '{a}'\nvariables: [a]\n", "missing required key"),
    ],
)
def test_malformed_prompt_files_are_rejected(tmp_path: Path, body: str, problem: str) -> None:
    _write(tmp_path, body)
    with pytest.raises(PromptFileError, match=problem):
        PromptRegistry(tmp_path)
