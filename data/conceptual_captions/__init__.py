"""Conceptual Captions preparation tools: download lists, image validity check, stored zips, JSON-lines indexes."""
