"""The review page: valid HTML, worst video first, self-contained, links that resolve; and the command."""
from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from review_folders import boxes
from stma_cli.cli.app import app
from stma_cli.review.page import write_page
from stma_cli.review.scan import review_folder

runner = CliRunner()
A, B = (10, 10, 20, 20), (40, 90, 20, 20)


class Page(HTMLParser):
    """What the page holds: headings, links, images, plots; and whether every tag was closed."""

    VOID = {"meta", "img", "br", "circle", "line", "rect", "polyline"}

    def __init__(self, text: str) -> None:
        super().__init__()
        self.headings: list[str] = []
        self.links: list[str] = []
        self.images: list[str] = []
        self.plots = 0
        self.open: list[str] = []
        self._in_h2 = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attrs = dict(attrs)
        if tag not in self.VOID:
            self.open.append(tag)
        self._in_h2 = tag == "h2"
        if tag == "a":
            self.links.append(attrs["href"])
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "svg":
            self.plots += 1

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        pass

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID:
            assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
            self.open.pop()
        self._in_h2 = False

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.headings.append(data)


@pytest.fixture
def two_folders(make_folder):
    calm = make_folder(boxes(6, {1: [A] * 6}), name="calm")
    swapped = make_folder(boxes(6, {1: [A] * 3 + [B] * 3, 2: [B] * 3 + [A] * 3}), cut=None, name="swapped")
    (swapped / "overlay.mp4").write_bytes(b"")  # stands for the overlay the page links to
    return calm, swapped


def test_the_page_puts_the_worst_video_first_and_is_self_contained(two_folders, tmp_path):
    calm, swapped = two_folders
    path = tmp_path / "pages" / "review.html"
    path.parent.mkdir()
    page = Page(write_page([review_folder(calm), review_folder(swapped)], path))
    assert page.open == ["html"] or page.open == []  # every element but the document closed
    assert [Path(h).name for h in page.headings] == ["swapped", "calm"]
    assert page.plots == 3  # one per object
    assert page.images and all(src.startswith("data:image/jpeg;base64,") for src in page.images)
    external = [link for link in page.links if not link.startswith("#")]
    assert external == ["../out/swapped/overlay.mp4"]
    assert (path.parent / external[0]).resolve() == (swapped / "overlay.mp4").resolve()


def test_review_command_writes_the_page_and_json(two_folders, tmp_path):
    calm, swapped = two_folders
    page = tmp_path / "review.html"
    result = runner.invoke(app, ["review", str(calm), str(tmp_path / "missing"), str(swapped), "-o", str(page)])
    assert result.exit_code == 1  # the missing folder; the others are reviewed
    assert "2 reviewed, 1 flags" in result.stderr and "missing/manifest.json" in result.stderr
    assert page.is_file() and "swapped" in page.read_text()
    result = runner.invoke(app, ["review", str(calm), str(swapped), "--json"])
    assert result.exit_code == 0
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(r["folder"]).name for r in records] == ["swapped", "calm"]
    assert records[0]["flags"] == [{"kind": "swap", "object": 1, "frame": 3, "detail": "objects 1 and 2 traded places"}]


def test_the_page_renders_in_a_headless_browser(two_folders, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium)")
    calm, swapped = two_folders
    page, shot = tmp_path / "review.html", tmp_path / "review.png"
    assert runner.invoke(app, ["review", str(calm), str(swapped), "-o", str(page)]).exit_code == 0
    done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                           "--window-size=900,1200", page.as_uri()], capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    from PIL import Image

    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[:2] == (1200, 900)
    assert (pixels.std(axis=(0, 1)) > 10).all()  # not a blank page: text, plots and thumbnails drawn
