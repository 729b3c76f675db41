"""Fixtures of the VCR tests (helpers live in vcr_fixtures.py)."""
from vcr_fixtures import vocab_only_dir  # noqa: F401
