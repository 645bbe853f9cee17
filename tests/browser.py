"""Debian's Chromium driven by Playwright, for the tests that use the web page as a person would.

Playwright cannot download browsers here, so it launches /usr/bin/chromium (apt package
``chromium``, installed by ``make system-deps`` / ``scripts/system-deps.sh``) with a fresh profile and
the flags that keep it off the network.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 60_000
MISSING = "/usr/bin/chromium is missing (Debian package 'chromium'; scripts/system-deps.sh installs it as root)"


@contextmanager
def chromium_page(profile: Path) -> Iterator[Any]:
    """A page in a new browser profile; fails the test if the page's script threw."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1200, "height": 860},
        )
        context.set_default_timeout(WAIT_MS)
        page = context.pages[0] if context.pages else context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        yield page
        context.close()
        assert not errors, f"JavaScript errors on the page: {errors}"
