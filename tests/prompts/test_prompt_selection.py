"""The A/B split: weighted, deterministic per request id, validated at start-up."""

from collections import Counter
from pathlib import Path

import pytest

from app.settings import Settings
from prompts.registry import PromptRegistry
from prompts.selection import PromptSelector, PromptSplitError, normalize_split


def _choose_many(selector: PromptSelector, n: int = 10_000) -> Counter[str]:
    return Counter(selector.choose("answer", "answer@v1", f"req-{i}") for i in range(n))


def test_shares_follow_the_weights_within_two_percent() -> None:
    selector = PromptSelector({"answer": {"answer@v1": 0.9, "answer@v2": 0.1}})
    counts = _choose_many(selector)
    assert set(counts) == {"answer@v1", "answer@v2"}
    assert abs(counts["answer@v1"] / 10_000 - 0.9) < 0.02 and abs(counts["answer@v2"] / 10_000 - 0.1) < 0.02

    three = _choose_many(PromptSelector({"answer": {"v1": 1, "v2": 1, "v3": 2}}))
    for ref, share in {"answer@v1": 0.25, "answer@v2": 0.25, "answer@v3": 0.5}.items():
        assert abs(three[ref] / 10_000 - share) < 0.02, (ref, three)


def test_same_request_id_same_version_whatever_the_config_order() -> None:
    a = PromptSelector({"answer": {"answer@v1": 0.5, "answer@v2": 0.5}})
    b = PromptSelector({"answer": {"answer@v2": 0.5, "answer@v1": 0.5}})
    picks = [a.choose("answer", "answer@v1", f"id-{i}") for i in range(200)]
    assert picks == [a.choose("answer", "answer@v1", f"id-{i}") for i in range(200)]  # a retry gets the same
    assert picks == [b.choose("answer", "answer@v1", f"id-{i}") for i in range(200)]  # another worker too
    assert len(set(picks)) == 2


def test_an_explicit_request_wins_and_no_split_means_the_default() -> None:
    selector = PromptSelector({"answer": {"answer@v2": 1.0}})
    assert selector.choose("answer", "answer@v1", "r1") == "answer@v2"
    assert selector.choose("answer", "answer@v1", "r1", requested="answer@v1") == "answer@v1"
    assert selector.choose("condense", "condense@v1", "r1") == "condense@v1"
    assert PromptSelector().choose("answer", "answer@v1", "r1") == "answer@v1"
    assert PromptSelector({"answer": {}}).choose("answer", "answer@v1", "r1") == "answer@v1"


@pytest.mark.parametrize(
    ("weights", "problem"),
    [
        ({"answer@v1": 0}, "must be a number > 0"),
        ({"answer@v1": -1}, "must be a number > 0"),
        ({"answer@v1": float("nan")}, "must be a number > 0"),
        ({"condense@v1": 1}, "may only name versions of it"),
        ({"answer": 1}, "not of the form name@vN"),
        ({"answer@latest": 1}, "not of the form name@vN"),
        ({"v2": 1, "answer@2": 1}, "names answer@v2 twice"),
    ],
)
def test_bad_splits_are_refused(weights: dict[str, float], problem: str) -> None:
    with pytest.raises(PromptSplitError, match=problem):
        normalize_split("answer", weights)


def test_refs_must_exist_when_a_registry_is_given() -> None:
    registry = PromptRegistry()
    assert PromptSelector({"answer": {"v1": 1, "v2": 1}}, registry).shares("answer") == {
        "answer@v1": 0.5,
        "answer@v2": 0.5,
    }
    with pytest.raises(PromptSplitError, match="no prompt answer@v42"):
        PromptSelector({"answer": {"answer@v1": 0.5, "answer@v42": 0.5}}, registry)


def test_split_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The setting is read as given and checked against the prompt files when the service is built
    (before a server says ready): a bad split stops the start with an error naming the setting."""
    from app.bootstrap import Components
    from app.errors import ConfigurationError

    monkeypatch.setenv("KB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("KB_PROMPTS__SPLIT", '{"answer": {"v2": 0.9, "answer@v1": 0.1}}')
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert Components(settings).prompt_selector.shares("answer") == pytest.approx({"answer@v1": 0.1, "answer@v2": 0.9})

    monkeypatch.setenv("KB_PROMPTS__SPLIT", '{"answer": {"answer@v2": 0}}')
    with pytest.raises(ConfigurationError, match=r"KB_PROMPTS__SPLIT: .*must be a number > 0"):
        _ = Components(Settings(_env_file=None)).prompt_selector  # type: ignore[call-arg]
    monkeypatch.setenv("KB_PROMPTS__SPLIT", '{"answer": {"answer@v2": 0.5, "answer@v9": 0.5}}')
    with pytest.raises(ConfigurationError, match=r"KB_PROMPTS__SPLIT: .*no prompt answer@v9"):
        _ = Components(Settings(_env_file=None)).prompt_selector  # type: ignore[call-arg]
    monkeypatch.delenv("KB_PROMPTS__SPLIT")
    assert Settings(_env_file=None).prompts.split == {}  # type: ignore[call-arg]


def test_the_split_version_is_recorded_on_the_answer_the_ledger_and_the_audit_log(
    handbook_data_dir, tmp_path, embedder
):  # type: ignore[no-untyped-def]
    import shutil

    from app.bootstrap import Components
    from tests.servers import api_client

    data_dir = tmp_path / "data"
    shutil.copytree(handbook_data_dir, data_dir)
    split = {"answer": {"answer@v1": 0.5, "answer@v2": 0.5}}
    settings = Settings(_env_file=None, data_dir=data_dir, prompts={"split": split})  # type: ignore[call-arg]
    components = Components(settings, embedder=embedder)
    chosen = {}
    with api_client(components, role="employee", collections=("handbook",)) as client:
        for i in range(12):
            body = {"question": "What is the hotel limit per night?", "cache": False}
            answer = client.post("/chat", json=body, headers={"X-Request-ID": f"ab-{i}"}).json()
            chosen[answer["request_id"]] = answer["prompt"]
    components = Components(settings, embedder=embedder)  # the server closed its stores on shutdown
    try:
        assert set(chosen.values()) == {"answer@v1", "answer@v2"}
        ledger = {r["request_id"]: r["prompt"] for r in components.ledger.rows() if r["request_id"] in chosen}
        audited = {r["request_id"]: r["prompt"] for r in components.audit.rows() if r["request_id"] in chosen}  # type: ignore[union-attr]
        assert ledger == chosen and audited == chosen
    finally:
        components.close()
