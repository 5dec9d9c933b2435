"""Fixtures shared by the solver tests."""

from __future__ import annotations

import signal

import pytest


@pytest.fixture
def default_sigint():
    """Ctrl-C as an interactive Python process has it: pytest started as a background job
    inherits SIGINT ignored, which pairot keeps ignored on purpose."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
