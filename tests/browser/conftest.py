"""Browser tests drive Debian's Chromium (/usr/bin/chromium) through Playwright."""

import os
import shutil

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
# Keep Chromium off the network it cannot reach here, and quick to start.
CHROMIUM_ARGS = [
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if not shutil.which(CHROMIUM):
        pytest.fail(f"Chromium not found at {CHROMIUM}: run scripts/test.sh, which installs it.")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


@pytest.fixture(autouse=True)
def _fail_fast(page):
    # Pages here answer in milliseconds; a missing element should fail in seconds, not 30.
    page.set_default_timeout(8000)


@pytest.fixture(autouse=True)
def csp_violations(page):
    """Every page keeps to its Content-Security-Policy: Chromium reports each refusal (an
    inline script or style, a foreign source) on the console; any makes the test fail."""
    refused = []
    page.on(
        "console",
        lambda message: (
            refused.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    yield refused  # a test that provokes one on purpose clears it
    assert refused == []
