"""Every image a Markdown page of the repository shows (`![alt](path)`) is a file in the repository, a real image
(the README's results-browser screenshot among them)."""
from __future__ import annotations

import glob
import os
import re

from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")


def test_markdown_images_exist_and_open():
    pages = [os.path.join(ROOT, "README.md"), *glob.glob(os.path.join(ROOT, "docs", "*.md")),
             *glob.glob(os.path.join(ROOT, "viz", "*.md"))]
    shown = {}
    for page in pages:
        with open(page, encoding="utf-8") as f:
            for link in IMAGE_LINK.findall(f.read()):
                if not link.startswith(("http://", "https://")):
                    shown[os.path.normpath(os.path.join(os.path.dirname(page), link))] = page
    assert os.path.join(ROOT, "docs", "browse_screenshot.png") in shown
    for path, page in shown.items():
        assert os.path.isfile(path), f"{page} shows {path}, which is missing"
        with Image.open(path) as image:
            image.verify()
