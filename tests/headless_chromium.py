"""Headless Chromium for the tests that open pairot's HTML in a browser (the report, the
documentation site): the executable, if installed, and one run of it that dumps the page's DOM."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def chromium() -> str | None:
    """The ``chromium`` executable, or None where it is not installed (the tests skip)."""
    return shutil.which("chromium")


def dump_dom(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    """Open ``url`` in headless Chromium with a fresh ``profile`` folder and the ``extra``
    flags; the completed process, its stdout the DOM after the page ran (10 s of virtual
    time)."""
    return subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            *extra,
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
