"""Public namespaces: nothing but the documented names (and submodules), all introspectable."""

from __future__ import annotations

import inspect
import types

import pytest

import pairot as pr

PUBLIC_MODULES = [pr.pp, pr.tl, pr.pl, pr.datasets]


def _leaked(module) -> list[str]:
    """Public names of ``dir(module)`` that are neither in ``__all__`` nor submodules."""
    return [
        name
        for name in dir(module)
        if not name.startswith("_")
        and name not in module.__all__
        and not isinstance(getattr(module, name), types.ModuleType)
    ]


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_dir_shows_only_public_api_and_submodules(module):
    leaked = _leaked(module)
    assert leaked == [], f"{module.__name__} exposes names outside __all__: {leaked}"
    assert "annotations" not in dir(module)


@pytest.mark.parametrize("module", PUBLIC_MODULES, ids=lambda m: m.__name__)
def test_every_public_callable_has_a_signature(module):
    assert module.__all__, module.__name__
    for name in module.__all__:
        value = getattr(module, name)  # every name of __all__ exists
        if callable(value):
            inspect.signature(value)  # raises for non-introspectable objects


def test_future_import_would_be_caught():
    """The check above fails on the leak it is meant to catch (a __future__ feature object)."""
    import __future__

    fake = types.ModuleType("fake")
    fake.__all__ = ["f"]
    fake.f = lambda: None
    fake.annotations = __future__.annotations
    assert _leaked(fake) == ["annotations"]
    with pytest.raises((TypeError, ValueError)):
        inspect.signature(fake.annotations)
