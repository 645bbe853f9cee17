"""The web chat page in a real headless browser: Debian's Chromium driven by Playwright.

The real app runs under uvicorn on the ingested handbook with auth on; the browser types
an employee key and a question, and the test checks what an employee sees: the streamed
answer, a citation (handbook.pdf, page 2), the passage behind it, a follow-up in the same
conversation, and a readable message for a wrong key. Document text is untrusted, so one
test ingests a hostile document and checks its markup shows as text and never runs.

Playwright cannot download browsers here, so it launches /usr/bin/chromium (apt package
``chromium``, installed by ``make system-deps`` / ``scripts/system-deps.sh``).
Screenshots go to ``$KB_TEST_ARTIFACTS`` (default ``test-artifacts/`` at the repo root).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.api.main import create_app
from app.api.routes.web import WEB_DIR
from app.bootstrap import Components
from app.settings import LlmSettings, Settings
from tests.browser import CHROMIUM, MISSING, chromium_page
from tests.conftest import ROOT
from tests.servers import FakeOpenAI, serve_app

QUESTION = "How many days of annual leave do I get?"
HOSTILE = """# Expense policy <img src=x onerror="window.__pwned = 1">

The meal allowance on business trips is 45 euros per day. <script>window.__pwned = 1</script>
Receipts are <b>required</b> for every expense over 20 euros.
"""

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=MISSING,
    ),
]


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    folder = Path(os.environ.get("KB_TEST_ARTIFACTS") or ROOT / "test-artifacts") / "web" / request.node.name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def server(handbook_components: Components, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The app on 127.0.0.1 with auth on, and an employee key for 'handbook' and 'untrusted'."""
    hostile = tmp_path / "untrusted-docs"
    hostile.mkdir()
    (hostile / "expenses.md").write_text(HOSTILE, encoding="utf-8")
    report = handbook_components.ingest_pipeline.ingest([hostile], "untrusted")
    assert report.added == 1, report
    token = handbook_components.keys.create("alice", "employee", ["handbook", "untrusted"]).token
    app = create_app(handbook_components.settings, components=handbook_components)
    with serve_app(app) as url:
        yield url, token


@pytest.fixture
def page(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    with chromium_page(tmp_path / "chromium-profile") as page:  # fresh profile: no stored key from another run
        yield page


def enter_key(page, token: str) -> None:  # type: ignore[no-untyped-def]
    page.fill("#api-key", token)
    page.click("#key-form button[type=submit]")


def ask(page, question: str):  # type: ignore[no-untyped-def]
    """Type the question, press Enter; returns the /chat request and response the page made."""
    page.fill("#question", question)
    with page.expect_response(lambda r: r.url.endswith("/chat")) as response:
        page.press("#question", "Enter")
    return response.value.request, response.value


def test_page_is_public_and_locked_down(server: tuple[str, str]) -> None:
    url, _ = server
    r = httpx.get(url + "/", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    for asset in ("/static/chat.js", "/static/chat.css"):
        assert httpx.get(url + asset, timeout=10).status_code == 200, asset
    assert "/" not in httpx.get(url + "/openapi.json", timeout=10).json()["paths"]


def test_ask_see_citation_open_passage_and_follow_up(server: tuple[str, str], page, artifacts: Path) -> None:  # type: ignore[no-untyped-def]
    url, token = server
    page.goto(url)
    page.screenshot(path=str(artifacts / "1-empty.png"))
    enter_key(page, token)
    page.wait_for_selector("#collection option[value=handbook]", state="attached")
    assert page.evaluate("localStorage.getItem('kb.apiKey')") == token

    request, response = ask(page, QUESTION)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert request.post_data_json["stream"] is True
    assert request.headers["authorization"] == f"Bearer {token}"
    first = page.locator(".turn").nth(0)
    first.locator(".sources").wait_for()
    assert "27 days" in first.locator(".answer-text").inner_text()
    sources = first.locator(".sources li")
    where = r"handbook\.pdf\s*Fernhill Analytics Employee Handbook › HR Policy: Time Off › page 2\b"
    assert re.search(where, sources.nth(0).inner_text()), sources.nth(0).inner_text()
    assert "answer@v" in first.locator(".meta").first.inner_text()
    page.screenshot(path=str(artifacts / "2-answer.png"))

    assert first.locator(".sentence").count() >= 1 and first.locator(".sentence--unsupported").count() == 0
    first.locator(".answer-text button.cite").first.click()  # the [1] marker inside the answer text
    dialog = page.locator("dialog#passage")
    dialog.wait_for(state="visible")
    assert page.inner_text("#passage-title") == "handbook.pdf"
    assert "page 2" in page.inner_text("#passage-where")
    assert "27 days" in page.inner_text("#passage-text")
    # the words that support the sentence are highlighted, by the verifier's offsets
    assert "27 days of paid annual leave" in page.inner_text("#passage-text mark.support")
    assert "support the sentence" in page.inner_text("#passage-support")
    page.screenshot(path=str(artifacts / "3-passage.png"))
    page.keyboard.press("Escape")
    dialog.wait_for(state="hidden")

    request, _ = ask(page, "And for contractors?")
    assert request.post_data_json.get("conversation_id"), "the follow-up must continue the conversation"
    second = page.locator(".turn").nth(1)
    second.locator(".meta").first.wait_for()
    assert "ontractor" in second.locator(".answer").inner_text()
    page.screenshot(path=str(artifacts / "4-follow-up.png"), full_page=True)

    page.click("#new-conversation")
    assert page.locator(".turn").count() == 0
    request, _ = ask(page, QUESTION)
    assert not request.post_data_json.get("conversation_id")
    page.locator(".turn .sources").wait_for()

    ask(page, "Who won the football world cup in 1954?")  # the documents don't say: "I don't know", styled apart
    unknown = page.locator(".turn").nth(1).locator(".answer--unknown")
    unknown.wait_for()
    assert unknown.locator(".sources").count() == 0
    page.screenshot(path=str(artifacts / "5-i-dont-know.png"), full_page=True)


def test_wrong_key_says_so(server: tuple[str, str], page, artifacts: Path) -> None:  # type: ignore[no-untyped-def]
    url, _ = server
    page.goto(url)
    enter_key(page, "kb_not-a-real-key")
    page.locator("#notice").wait_for(state="visible")  # listing collections was refused too
    _, response = ask(page, QUESTION)
    assert response.status == 401
    error = page.locator(".answer--error")
    error.wait_for()
    assert "Enter a valid API key" in error.inner_text()
    page.screenshot(path=str(artifacts / "wrong-key.png"))

    page.click("#forget-key")
    assert page.evaluate("localStorage.getItem('kb.apiKey')") is None
    assert page.input_value("#api-key") == ""


def test_document_markup_is_shown_as_text_never_run(server: tuple[str, str], page, artifacts: Path) -> None:  # type: ignore[no-untyped-def]
    url, token = server
    page.goto(url)
    enter_key(page, token)
    page.wait_for_selector("#collection option[value=untrusted]", state="attached")
    page.select_option("#collection", "untrusted")
    ask(page, "What is the meal allowance on business trips?")
    page.locator(".turn .sources").wait_for()
    page.locator(".turn .sources .source-link").first.click()
    page.locator("dialog#passage").wait_for(state="visible")
    page.screenshot(path=str(artifacts / "hostile-passage.png"))
    assert "<script>" in page.inner_text("#passage-text") or "<b>" in page.inner_text("#passage-text")
    assert page.locator("main img, dialog img, main script, dialog script, .answer b, dialog b").count() == 0
    assert page.evaluate("window.__pwned") is None


def test_sse_parser_gives_the_same_events_however_the_stream_is_chunked(page) -> None:  # type: ignore[no-untyped-def]
    stream = (
        'event: token\r\ndata: {"delta": "a"}\r\n\r\n'  # CRLF line ends
        ": keep-alive comment\n\n"
        'event: token\ndata: {"delta": "b\\nc"}\n\n'
        'event: done\ndata: {"x":\ndata: 1}\n\n'  # data over two lines
        "event: error\ndata: last"  # no blank line before the stream ends
    )
    page.add_script_tag(path=str(WEB_DIR / "static" / "sse.js"))
    runs = page.evaluate(
        """(stream) => {
            const runs = new Set();
            for (let size = 1; size <= stream.length; size++) {
                const seen = [];
                const parser = window.kbSseParser((event, data) => seen.push([event, data]));
                for (let i = 0; i < stream.length; i += size) parser.push(stream.slice(i, i + size));
                parser.end();
                runs.add(JSON.stringify(seen));
            }
            return [...runs];
        }""",
        stream,
    )
    assert [json.loads(r) for r in runs] == [
        [["token", '{"delta": "a"}'], ["token", '{"delta": "b\\nc"}'], ["done", '{"x":\n1}'], ["error", "last"]]
    ]


@pytest.fixture
def generative_server(handbook_components: Components, embedder) -> Iterator[tuple[str, str, FakeOpenAI]]:  # type: ignore[no-untyped-def]
    """The app answering with a generative provider whose reply the test writes (the openai SDK against
    a local OpenAI-compatible server)."""
    with FakeOpenAI() as fake:
        llm = LlmSettings(base_url=fake.base_url, model="gpt-4o-mini", timeout_s=5.0, max_retries=0)  # type: ignore[call-arg]
        settings = Settings(_env_file=None, data_dir=handbook_components.settings.data_dir, llm=llm)  # type: ignore[call-arg]
        components = Components(settings, embedder=embedder)
        token = components.keys.create("bob", "employee", ["handbook"]).token
        with serve_app(create_app(settings, components=components)) as url:
            yield url, token, fake
        components.close()


def test_an_unsupported_sentence_is_marked_and_its_marker_says_why(generative_server, page, artifacts: Path) -> None:  # type: ignore[no-untyped-def]
    url, token, fake = generative_server
    fake.reply = (
        "Full-time employees 📅📅📅 receive 27 days of paid annual leave per calendar year [1]. "  # 📅: 2 UTF-16 units
        "Up to 9 unused days may be carried over into the next year [1]."
    )
    page.goto(url)
    enter_key(page, token)
    page.wait_for_selector("#collection option[value=handbook]", state="attached")
    ask(page, QUESTION)
    turn = page.locator(".turn").nth(0)
    turn.locator(".meta").first.wait_for()
    unsupported = turn.locator(".sentence--unsupported")
    assert unsupported.count() == 1 and "9 unused days" in unsupported.inner_text()
    assert turn.locator(".sentence button.cite").count() == 2  # offsets after the emoji still land on markers
    assert "not supported" in turn.locator(".support-note").inner_text()
    assert "number differs" in (unsupported.get_attribute("title") or "")
    page.screenshot(path=str(artifacts / "1-flagged.png"))
    unsupported.locator("button.cite").click()
    page.locator("dialog#passage").wait_for(state="visible")
    assert "Not supported: a number differs" in page.inner_text("#passage-support")
    assert "5 unused days" in page.inner_text("#passage-text mark.support--weak")  # the closest words, shown
    page.screenshot(path=str(artifacts / "2-why.png"))


def test_thumbs_down_with_a_comment_is_stored(  # type: ignore[no-untyped-def]
    server: tuple[str, str], page, artifacts: Path, handbook_components: Components
) -> None:
    url, token = server
    page.goto(url)
    enter_key(page, token)
    page.wait_for_selector("#collection option[value=handbook]", state="attached")
    ask(page, QUESTION)
    turn = page.locator(".turn").nth(0)
    turn.locator(".feedback").wait_for()
    turn.locator(".feedback-down").click()
    turn.locator(".feedback-comment").fill("It should mention the carry-over rule first.")
    turn.locator(".feedback-correction").fill("27 days; up to 5 carry over until 31 March (handbook.pdf, page 2).")
    with page.expect_response(lambda r: r.url.endswith("/feedback")) as sent:
        turn.locator(".feedback-form button[type=submit]").click()
    assert sent.value.status == 201
    assert "Thanks" in turn.locator(".feedback-status").inner_text()
    page.screenshot(path=str(artifacts / "feedback.png"))
    [row] = handbook_components.feedback.rows()
    assert row["verdict"] == "down" and row["comment"] == "It should mention the carry-over rule first."
    assert row["question"] == QUESTION and row["key_name"] == "alice"
    assert row["correction"] == "27 days; up to 5 carry over until 31 March (handbook.pdf, page 2)."
