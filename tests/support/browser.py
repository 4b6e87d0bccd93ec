"""Headless Chromium for the browser tests: Debian's package, driven by Playwright, loopback only.

    with chromium() as browser:           # `make browser` installs Debian's chromium
        page = browser.new_page()
        page.goto(f"{proxy.url}/admin/login/")
        save_screenshot(page, tmp_path=tmp_path, name="login")

The browser is Debian's ``chromium`` package, never one Playwright downloads (``playwright
install`` fetches builds from a CDN; the wheel's driver is all we take from PyPI). Playwright
drives any Chromium over CDP through ``executable_path``; we point it at the binary under
/usr/lib/chromium rather than the /usr/bin/chromium launcher script, because that script sources
/etc/chromium.d, which exports Google API keys (turning on the services they unlock) and adds
``--enable-remote-extensions`` and ``--load-extension`` to every start.

Playwright's own switches already turn off background networking, component updates, sync,
default apps, extensions and the field-trial config. On top, the browser may only reach
loopback: every host name resolves to nothing but 127.0.0.1 (the live servers' address, which
the tests use literally), and no proxy from the environment is used. Translate needs no switch
of its own: with those names unresolvable it cannot fetch anything, and the pages are in the
browser's language. ``--disable-features`` is deliberately not passed: Chromium honours only the
last occurrence, so ours would silently replace Playwright's whole list.

Root (as on CI) cannot run Chromium's sandbox; Playwright passes ``--no-sandbox`` unless
``chromium_sandbox=True``, and we say so explicitly.

Sync API caveat: inside ``chromium()`` an asyncio loop is running on this thread (Playwright's
sync API runs one in a greenlet), so Django's ORM raises SynchronousOnlyOperation there. Set up
the database before entering and read it after leaving, or go through HTTP meanwhile.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

REPO = Path(__file__).resolve().parent.parent.parent
# What the Debian package installs: the launcher script (how we tell it is there) and the
# browser binary the script execs (what we run).
CHROMIUM_LAUNCHER = Path("/usr/bin/chromium")
CHROMIUM_BINARY = Path("/usr/lib/chromium/chromium")
# Screenshots and the like, also kept outside pytest's temporary directories so a run's
# artifacts are easy to find (and to upload from CI); /var/ is ignored by git.
ARTIFACTS = REPO / "var" / "test-artifacts"

CHROMIUM_ARGS: tuple[str, ...] = (
    # Nothing but loopback: no proxy from the environment, and every host maps to "not found"
    # except 127.0.0.1; IP literals too (a page asking for this machine's own non-loopback
    # address gets ERR_NAME_NOT_RESOLVED). No quotes around the rule: Playwright starts
    # Chromium without a shell.
    "--no-proxy-server",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    # Belt and braces beside Playwright's --disable-background-networking/-component-update/
    # -sync: no pings, no phishing-model or reliability uploads, no DNS prefetch.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--no-pings",
    "--dns-prefetch-disable",
    "--no-first-run",
    "--lang=en-US",
)


def chromium_executable() -> Path:
    """Debian's Chromium binary; skips the test when this machine cannot have one."""
    if CHROMIUM_LAUNCHER.exists() and CHROMIUM_BINARY.exists():
        return CHROMIUM_BINARY
    if CHROMIUM_LAUNCHER.exists():
        # Not the Debian layout (another distribution's package): its launcher is the browser.
        return CHROMIUM_LAUNCHER
    if shutil.which("apt-get") is None:
        pytest.skip("no Chromium at /usr/bin/chromium and no apt-get to install Debian's")
    # apt-get is here, so `make browser` (run by `make test-services`) would have installed it:
    # a missing browser is then a setup fault to see, not a test to quietly drop.
    pytest.fail(
        "Chromium is not installed: run `make browser` "
        "(apt-get install --no-install-recommends chromium, as root)",
        pytrace=False,
    )


@contextmanager
def chromium(*, slow_mo: float = 0) -> Iterator[Browser]:
    """A headless Chromium reaching only loopback, closed afterwards."""
    executable = chromium_executable()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            chromium_sandbox=False,
            args=list(CHROMIUM_ARGS),
            slow_mo=slow_mo,
        )
        try:
            yield browser
        finally:
            browser.close()


def save_screenshot(page: Page, *, tmp_path: Path, name: str) -> Path:
    """A full-page PNG in the test's tmp dir, copied to var/test-artifacts/; printed."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    stable = ARTIFACTS / path.name
    shutil.copyfile(path, stable)
    print(f"screenshot: {stable} (also {path})")
    return stable


@contextmanager
def screenshot_on_failure(page: Page, *, tmp_path: Path, name: str) -> Iterator[None]:
    """On any failure inside, a screenshot of what the page showed (``<name>-failed.png``)."""
    try:
        yield
    except BaseException:
        with suppress(Exception):  # a browser already gone must not hide the real failure
            save_screenshot(page, tmp_path=tmp_path, name=f"{name}-failed")
        raise
