"""Where Chromium is missing the browser tests skip with the install command as the reason, and fail instead when
REQUIRE_CHROMIUM=1 asks for them (tests/viz/chromium.py)."""
from __future__ import annotations

import shutil

import pytest

from tests.viz import chromium


def test_a_missing_browser_skips_with_the_install_command(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv(chromium.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="make browser-deps"):
        chromium.chromium_or_skip()
    with pytest.raises(pytest.skip.Exception, match="make browser-deps"):
        chromium.Chromium("/nonexistent-profile")  # before any process starts


def test_a_required_missing_browser_fails(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv(chromium.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="REQUIRE_CHROMIUM=1"):
        chromium.chromium_or_skip()


def test_the_first_browser_found_is_used(monkeypatch):
    found = {"chromium-browser": "/opt/bin/chromium-browser", "google-chrome": "/usr/bin/google-chrome"}
    monkeypatch.setattr(shutil, "which", found.get)
    monkeypatch.setenv(chromium.REQUIRE_ENV, "1")
    assert chromium.chromium_or_skip() == "/opt/bin/chromium-browser"
