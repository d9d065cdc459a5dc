"""The review page: one self-contained HTML file over many videos, worst first.

Per video: its flags, a link to its overlay, the flagged frames as thumbnails with the masks drawn, and
per object an inline SVG plot of its area (and presence) over time, with shot changes and flags marked.
Nothing is loaded from elsewhere but the overlays it links to.
"""
from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import numpy as np

from stma_cli.io.overlay import palette_colors
from stma_cli.review.scan import VideoReview

PLOT_WIDTH, PLOT_HEIGHT, MARGIN = 640, 110, 28
FLAG_COLORS = {"swap": "#d62728", "presence_drop": "#9467bd", "after_cut": "#ff7f0e", "area_jump": "#1f77b4"}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin: 28px 0 6px; border-top: 1px solid #ccc; padding-top: 12px; }
.summary td, .summary th { padding: 2px 10px; text-align: left; }
.flags { font-size: 13px; margin: 4px 0 8px; }
.thumbs figure { display: inline-block; vertical-align: top; width: 240px; margin: 4px; font-size: 12px; }
.kind { display: inline-block; width: 10px; height: 10px; margin-right: 4px; }
svg { display: block; margin: 4px 0; }
"""


def write_page(reviews: list[VideoReview], path: Path) -> str:
    """The HTML of the review of `reviews` (sorted worst first here), with links relative to `path`."""
    ordered = sorted(reviews, key=lambda review: (-review.score, str(review.folder)))
    base = path.parent
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>stma review</title>"
             f"<style>{STYLE}</style></head><body>",
             f"<h1>stma review: {len(reviews)} videos, {sum(len(r.flags) for r in reviews)} flags</h1>",
             _legend(), _summary(ordered)]
    parts += [_video(review, base, number) for number, review in enumerate(ordered)]
    parts.append("</body></html>")
    return "\n".join(parts)


def _legend() -> str:
    return "<p class='flags'>" + " ".join(
        f"<span class='kind' style='background:{color}'></span>{kind.replace('_', ' ')}"
        for kind, color in FLAG_COLORS.items()) + "</p>"


def _summary(reviews: list[VideoReview]) -> str:
    rows = "".join(f"<tr><td><a href='#v{number}'>{html.escape(review.folder.name)}</a></td><td>{review.score}</td>"
                   f"<td>{len(review.flags)}</td><td>{len(review.frames)}</td></tr>"
                   for number, review in enumerate(reviews))
    return f"<table class='summary'><tr><th>video</th><th>score</th><th>flags</th><th>frames</th></tr>{rows}</table>"


def _video(review: VideoReview, base: Path, number: int) -> str:
    title = html.escape(str(review.folder))
    link = ""
    if review.overlay is not None:
        href = html.escape(Path(os.path.relpath(review.overlay.resolve(), base.resolve())).as_posix(), quote=True)
        link = f" &middot; <a href='{href}'>overlay.mp4</a>"
    counts = {}
    for flag in review.flags:
        counts[flag.kind] = counts.get(flag.kind, 0) + 1
    summary = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in counts.items()) or "no flags"
    parts = [f"<h2 id='v{number}'>{title}</h2>",
             f"<p class='flags'>score {review.score}: {summary}; frames {review.frames.start}-"
             f"{review.frames.stop - 1}{link}</p>"]
    if review.note:
        parts.append(f"<p class='flags'>{html.escape(review.note)}</p>")
    colors = palette_colors(review.palette)
    for k, object_id in enumerate(review.object_ids):
        parts.append(f"<div>object {object_id}</div>" + _plot(review, k, object_id, colors[object_id]))
    if review.thumbnails:
        figures = []
        for frame, jpeg in review.thumbnails.items():
            caption = "; ".join(f"{f.object_id}: {f.detail}" for f in review.flags if f.frame == frame)
            data = base64.b64encode(jpeg).decode()
            figures.append(f"<figure><img src='data:image/jpeg;base64,{data}' alt='frame {frame}'>"
                           f"<figcaption>frame {frame}: {html.escape(caption)}</figcaption></figure>")
        parts.append("<div class='thumbs'>" + "".join(figures) + "</div>")
    if review.flags:
        items = "".join(f"<li>frame {f.frame}, object {f.object_id}: {html.escape(f.kind.replace('_', ' '))}, "
                        f"{html.escape(f.detail)}</li>" for f in review.flags[:200])
        more = f"<li>... {len(review.flags) - 200} more</li>" if len(review.flags) > 200 else ""
        parts.append(f"<details><summary class='flags'>all flags</summary><ul class='flags'>{items}{more}</ul>"
                     "</details>")
    return "\n".join(parts)


def _plot(review: VideoReview, k: int, object_id: int, rgb: np.ndarray) -> str:
    """SVG: the object's area (solid, scaled to its largest) and presence (dashed, 0 to 1) over frames."""
    count = len(review.frames)
    width, height = PLOT_WIDTH - 2 * MARGIN, PLOT_HEIGHT - 2 * MARGIN // 2

    def x(t: float) -> float:
        return MARGIN + width * t / max(count - 1, 1)

    def y(value: float) -> float:
        return MARGIN // 2 + height * (1 - value)

    area = review.area[:, k]
    peak = float(area.max(initial=0))
    color = "#%02x%02x%02x" % tuple(int(c) for c in rgb)
    items = [f"<rect x='{MARGIN}' y='{MARGIN // 2}' width='{width}' height='{height}' fill='#fafafa' stroke='#ddd'/>"]
    for cut in review.cuts:
        cx = x(cut - review.frames.start)
        items.append(f"<line x1='{cx:.1f}' x2='{cx:.1f}' y1='{y(1):.1f}' y2='{y(0):.1f}' stroke='#aaa' "
                     "stroke-dasharray='2,2'/>")
    items.append(_polyline([x(t) for t in range(count)], [y(v / peak if peak else 0) for v in area],
                           f"stroke='{color}' stroke-width='1.5'"))
    if review.presence is not None:
        items.append(_polyline([x(t) for t in range(count)], [y(v) for v in review.presence[:, k]],
                               "stroke='#555' stroke-dasharray='4,2'"))
    for flag in review.flags:
        if flag.object_id == object_id or (flag.kind == "swap" and flag.detail.startswith(f"objects {object_id} ")):
            fx = x(flag.frame - review.frames.start)
            items.append(f"<circle cx='{fx:.1f}' cy='{y(1) - 5:.1f}' r='3.5' fill='{FLAG_COLORS[flag.kind]}'>"
                         f"<title>frame {flag.frame}: {html.escape(flag.detail)}</title></circle>")
    items.append(f"<text x='{MARGIN}' y='{PLOT_HEIGHT - 2}' font-size='11'>frame {review.frames.start}</text>")
    items.append(f"<text x='{MARGIN + width}' y='{PLOT_HEIGHT - 2}' font-size='11' text-anchor='end'>"
                 f"{review.frames.stop - 1}</text>")
    items.append(f"<text x='{MARGIN + width / 2}' y='{PLOT_HEIGHT - 2}' font-size='11' text-anchor='middle'>"
                 f"area (largest {100 * peak:.1f}% of the frame)"
                 f"{', presence dashed' if review.presence is not None else ''}</text>")
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width='{PLOT_WIDTH}' height='{PLOT_HEIGHT}' "
            f"role='img' aria-label='object {object_id} over time'>" + "".join(items) + "</svg>")


def _polyline(xs: list[float], ys: list[float], style: str) -> str:
    """A polyline of at most PLOT_WIDTH points: long series keep each pixel column's extremes."""
    if len(xs) > 2 * PLOT_WIDTH:
        columns = np.array_split(np.arange(len(xs)), PLOT_WIDTH)
        points = []
        for column in columns:
            values = [ys[i] for i in column]
            points += [(xs[column[0]], min(values)), (xs[column[-1]], max(values))]
    else:
        points = list(zip(xs, ys))
    coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
    return f"<polyline fill='none' {style} points='{coords}'/>"
