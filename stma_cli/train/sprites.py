"""Object sprites for the synthetic videos: random silhouettes and the textures that fill them.

A sprite is a float32 (4, s, s) RGBA tensor: a square texture (valid everywhere, so that bilinear
sampling at the silhouette's edge never bleeds a foreign colour) and an anti-aliased alpha map.
Textures are crops of real photos or video frames (natural image statistics, the same distribution as
the backgrounds) or procedural patterns. `Look` records how a texture was made so that a distractor
can copy the look of another object.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from stma_cli.train.assets import AssetBank, Photo
from stma_cli.train.geometry import affine_grid, affine_theta, rotate_scale, source_window, translate

_SUPERSAMPLE = 2
SHAPE_KINDS = ("ellipse", "polygon", "star", "blob", "noise", "limbs", "ring", "bar", "silhouette")
_SHAPE_WEIGHTS = (0.10, 0.14, 0.06, 0.18, 0.16, 0.16, 0.05, 0.05, 0.10)
PROCEDURAL_KINDS = ("noise", "stripes", "checker", "gradient")


def _choice(rng: np.random.Generator, items: tuple, weights: tuple[float, ...]):
    probabilities = np.asarray(weights, dtype=np.float64)
    return items[rng.choice(len(items), p=probabilities / probabilities.sum())]


def _ellipse_points(cx: float, cy: float, a: float, b: float, angle: float,
                    count: int = 40) -> list[tuple[float, float]]:
    phi = np.linspace(0.0, 2.0 * math.pi, count, endpoint=False)
    x, y = a * np.cos(phi), b * np.sin(phi)
    cos, sin = math.cos(angle), math.sin(angle)
    return list(zip(cx + cos * x - sin * y, cy + sin * x + cos * y))


def _radial_points(rng: np.random.Generator, c: float, radii: np.ndarray,
                   jitter: float = 0.0) -> list[tuple[float, float]]:
    count = len(radii)
    phi = np.linspace(0.0, 2.0 * math.pi, count, endpoint=False) + rng.uniform(0, 2 * math.pi)
    phi = phi + rng.uniform(-jitter, jitter, count) * (2 * math.pi / count)
    return list(zip(c + radii * np.cos(phi), c + radii * np.sin(phi)))


def _draw_shape(rng: np.random.Generator, kind: str, n: int) -> Image.Image:
    """Draw a silhouette of `kind` on an n x n canvas (white on black), filling roughly its middle 80%."""
    image = Image.new("L", (n, n), 0)
    draw = ImageDraw.Draw(image)
    c, r = n / 2, 0.4 * n
    if kind == "ellipse":
        ratio = rng.uniform(0.35, 1.0)
        draw.polygon(_ellipse_points(c, c, r, r * ratio, rng.uniform(0, math.pi), 64), fill=255)
    elif kind == "polygon":
        count = int(rng.integers(3, 9))
        draw.polygon(_radial_points(rng, c, r * rng.uniform(0.45, 1.0, count), jitter=0.35), fill=255)
    elif kind == "star":
        count = int(rng.integers(4, 8))
        radii = np.tile([1.0, rng.uniform(0.35, 0.65)], count) * r
        draw.polygon(_radial_points(rng, c, radii), fill=255)
    elif kind == "blob":
        phi = np.linspace(0.0, 2.0 * math.pi, 72, endpoint=False)
        harmonics = np.arange(2, 6)
        amplitudes = rng.uniform(0, 0.25, len(harmonics)) / np.sqrt(harmonics - 1)
        phases = rng.uniform(0, 2 * math.pi, len(harmonics))
        radii = 1.0 + (amplitudes[:, None] * np.cos(harmonics[:, None] * phi + phases[:, None])).sum(0)
        radii = r * radii / radii.max()
        draw.polygon(list(zip(c + radii * np.cos(phi), c + radii * np.sin(phi))), fill=255)
    elif kind == "limbs":
        body_a, body_b = r * rng.uniform(0.35, 0.6), r * rng.uniform(0.2, 0.4)
        body_angle = rng.uniform(0, math.pi)
        draw.polygon(_ellipse_points(c, c, body_a, body_b, body_angle), fill=255)
        cos, sin = math.cos(body_angle), math.sin(body_angle)
        for _ in range(int(rng.integers(2, 6))):
            phi = rng.uniform(0, 2 * math.pi)
            rim_x, rim_y = 0.8 * body_a * math.cos(phi), 0.8 * body_b * math.sin(phi)
            direction = math.atan2(rim_y, rim_x) + body_angle + rng.normal(0, 0.3)
            length, width = r * rng.uniform(0.3, 0.6), r * rng.uniform(0.06, 0.16)
            x = c + cos * rim_x - sin * rim_y + 0.5 * length * math.cos(direction)
            y = c + sin * rim_x + cos * rim_y + 0.5 * length * math.sin(direction)
            draw.polygon(_ellipse_points(x, y, 0.5 * length, width, direction, 24), fill=255)
    elif kind == "ring":
        ratio = rng.uniform(0.6, 1.0)
        angle = rng.uniform(0, math.pi)
        inner = rng.uniform(0.35, 0.65)
        draw.polygon(_ellipse_points(c, c, r, r * ratio, angle, 64), fill=255)
        draw.polygon(_ellipse_points(c, c, r * inner, r * ratio * inner, angle, 64), fill=0)
    elif kind == "bar":
        width = r * rng.uniform(0.12, 0.35)
        angle = rng.uniform(0, math.pi)
        draw.polygon(_ellipse_points(c, c, r, width, angle, 8 if rng.random() < 0.5 else 32), fill=255)
    else:
        raise ValueError(f"unknown shape kind {kind!r}")
    return image


def _noise_shape(rng: np.random.Generator, s: int) -> np.ndarray:
    """A blob from thresholded smooth noise, pulled towards the centre so that it stays mostly in one piece."""
    grid = int(rng.integers(3, 7))
    noise = torch.from_numpy(rng.standard_normal((1, 1, grid, grid)).astype(np.float32))
    field = F.interpolate(noise, size=(s, s), mode="bicubic", align_corners=True)[0, 0]
    axis = torch.linspace(-1.0, 1.0, s)
    falloff = 1.0 - (axis[None, :] ** 2 + axis[:, None] ** 2) / 0.64
    field = 0.6 * field + 1.5 * falloff - rng.uniform(0.3, 0.9)
    return (field * (s / 6.0)).clamp(0.0, 1.0).numpy()


def _silhouette_shape(rng: np.random.Generator, silhouette: np.ndarray, s: int) -> np.ndarray:
    """A real silhouette (e.g. the horse), randomly mirrored, fitted into the middle 80% of the sprite."""
    if rng.random() < 0.5:
        silhouette = silhouette[:, ::-1]
    h, w = silhouette.shape
    scale = 0.8 * s / max(h, w)
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = F.interpolate(torch.from_numpy(np.ascontiguousarray(silhouette))[None, None], size=(th, tw),
                            mode="bilinear", antialias=True, align_corners=False)[0, 0]
    out = np.zeros((s, s), dtype=np.float32)
    y, x = (s - th) // 2, (s - tw) // 2
    out[y: y + th, x: x + tw] = resized.numpy()
    return out


def make_shape(rng: np.random.Generator, s: int, bank: AssetBank, kind: str | None = None) -> np.ndarray:
    """A random anti-aliased silhouette as an (s, s) float32 alpha map in [0, 1]."""
    if kind is None:
        weights = _SHAPE_WEIGHTS if bank.shapes else _SHAPE_WEIGHTS[:-1] + (0.0,)
        kind = _choice(rng, SHAPE_KINDS, weights)
    if kind == "noise":
        return _noise_shape(rng, s)
    if kind == "silhouette":
        return _silhouette_shape(rng, bank.shapes[int(rng.integers(len(bank.shapes)))], s)
    image = _draw_shape(rng, kind, s * _SUPERSAMPLE).reduce(_SUPERSAMPLE)
    return np.asarray(image, dtype=np.float32) / 255.0


@dataclass(frozen=True)
class Look:
    """How an object's texture was made: enough to make a similar-looking one."""

    kind: str
    """"photo", "video" or one of PROCEDURAL_KINDS."""
    index: int = 0
    """Photo (bank.textures) or video index."""
    frame: int = 0
    centre: tuple[float, float] = (0.5, 0.5)
    """Crop centre as fractions of the source width and height."""
    zoom: float = 1.0
    """Source pixels (at full resolution) per sprite pixel; for a pattern, the scale of its features."""
    angle: float = 0.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    colours: tuple[tuple[float, float, float], ...] = ()
    """Palette of a procedural texture."""
    shade: tuple[float, float] = (0.0, 0.0)
    """Strength and direction of a linear shading ramp."""


def random_tint(rng: np.random.Generator, gray: bool) -> tuple[float, float, float]:
    """Per-channel gains: a colour cast for gray sources, a mild one for colour sources."""
    if gray:
        colour = 1.0 - rng.uniform(0.0, 0.45, 3)
        return tuple(float(v) for v in colour / colour.max() * rng.uniform(0.8, 1.2))
    return tuple(float(v) for v in rng.uniform(0.85, 1.15, 3))


def random_palette(rng: np.random.Generator, bank: AssetBank, count: int) -> tuple[tuple[float, float, float], ...]:
    """Colours for a procedural texture, taken from pixels of a real photo so that they look natural."""
    photo = bank.photos[int(rng.integers(len(bank.photos)))]
    level = photo.levels[-1]
    ys = rng.integers(level.shape[1], size=count)
    xs = rng.integers(level.shape[2], size=count)
    colours = level[:, ys, xs].T.numpy()
    if photo.gray:
        colours = colours * np.asarray(random_tint(rng, True))
    colours = colours + rng.normal(0, 0.08, colours.shape)
    return tuple(tuple(float(v) for v in np.clip(c, 0.0, 1.0)) for c in colours)


def random_look(rng: np.random.Generator, bank: AssetBank, background: tuple[str, int] | None = None) -> Look:
    """Pick a texture recipe: a real photo crop, a video frame crop, the background's own source, or a pattern.

    `background` is ("photo" | "video" | "procedural", index) of the background's source.
    """
    shade = (float(rng.uniform(0, 0.4)) if rng.random() < 0.5 else 0.0, float(rng.uniform(0, 2 * math.pi)))
    zoom = float(np.exp(rng.uniform(math.log(0.5), math.log(2.5))))
    centre = (float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.1, 0.9)))
    angle = float(rng.uniform(-math.pi, math.pi))
    draw = rng.random()
    if background is not None and background[0] in ("photo", "video") and draw < 0.2:
        kind, index = background
        frame = int(rng.integers(len(bank.videos[index].frames))) if kind == "video" else 0
        gray = kind == "photo" and bank.textures[index].gray
        # Same statistics as the background, but not invisible: shift the brightness by 15-40%.
        shift = rng.uniform(1.15, 1.4) ** rng.choice((-1.0, 1.0))
        tint = tuple(float(v * shift) for v in random_tint(rng, gray))
        return Look(kind, index, frame, centre, zoom, angle, tint, shade=shade)
    if draw < 0.55:
        index = int(rng.integers(len(bank.textures)))
        tint = random_tint(rng, bank.textures[index].gray)
        return Look("photo", index, 0, centre, zoom, angle, tint, shade=shade)
    if draw < 0.8 and bank.videos:
        index = int(rng.integers(len(bank.videos)))
        frame = int(rng.integers(len(bank.videos[index].frames)))
        return Look("video", index, frame, centre, zoom, angle, random_tint(rng, False), shade=shade)
    kind = PROCEDURAL_KINDS[int(rng.integers(len(PROCEDURAL_KINDS)))]
    palette = random_palette(rng, bank, int(rng.integers(2, 4)))
    return Look(kind, zoom=zoom, angle=angle, colours=palette, shade=shade)


def similar_look(rng: np.random.Generator, look: Look) -> Look:
    """A look of the same texture family: a nearby crop of the same source, the same colours."""
    centre = tuple(float(np.clip(c + rng.normal(0, 0.08), 0.05, 0.95)) for c in look.centre)
    tint = tuple(float(v * rng.uniform(0.93, 1.07)) for v in look.tint)
    return replace(look, centre=centre, tint=tint, angle=look.angle + float(rng.normal(0, 0.3)),
                   zoom=look.zoom * float(rng.uniform(0.85, 1.15)))


def _crop(source: torch.Tensor, look: Look, s: int, scale: float) -> torch.Tensor:
    """A rotated square crop, `look.zoom * scale` source pixels per output pixel, as (3, s, s) float.

    `source` is a (3, h, w) float image or an (h, w, 3) uint8 video frame (only the window read is converted).
    """
    frame = source.dtype == torch.uint8
    h, w = source.shape[:2] if frame else source.shape[1:]
    zoom = min(look.zoom * scale, 0.7 * min(h, w) / s)
    half = 0.5 * s * zoom * math.sqrt(2)
    cx = half + look.centre[0] * (w - 2 * half) if w > 2 * half else w / 2
    cy = half + look.centre[1] * (h - 2 * half) if h > 2 * half else h / 2
    out_to_src = translate(cx, cy) @ rotate_scale(look.angle, zoom) @ translate(-s / 2, -s / 2)
    if frame:
        x0, y0, x1, y1 = source_window(out_to_src, (s, s), (h, w))
        source = source[y0:y1, x0:x1].permute(2, 0, 1).float().div_(255.0)
        out_to_src = translate(-x0, -y0) @ out_to_src
    grid = affine_grid(affine_theta(tuple(source.shape[1:]), out_to_src, (s, s)), s, s)
    return F.grid_sample(source[None], grid, mode="bilinear", padding_mode="reflection", align_corners=False)[0]


def _photo_level(photo: Photo, zoom: float) -> tuple[torch.Tensor, float]:
    """The pyramid level whose resolution best matches `zoom` source pixels per output pixel."""
    level = int(np.clip(round(math.log2(max(zoom, 1e-3))), 0, len(photo.levels) - 1))
    return photo.levels[level], 1.0 / 2 ** level


_NOISE_SIDE = 1088
_NOISE_FIELD: list[torch.Tensor] = []


def noise_patch(rng: np.random.Generator, channels: int, h: int, w: int) -> torch.Tensor:
    """A (channels, h, w) view of unit Gaussian noise at a random offset of a fixed per-process field.

    Cropping a fixed field is far cheaper than drawing fresh noise, and random offsets decorrelate the patches.
    """
    if not _NOISE_FIELD:
        field = np.random.default_rng(0).standard_normal((3, _NOISE_SIDE, _NOISE_SIDE), dtype=np.float32)
        _NOISE_FIELD.append(torch.from_numpy(field))
    field = _NOISE_FIELD[0]
    reps_y, reps_x = -(-h // _NOISE_SIDE) + 1, -(-w // _NOISE_SIDE) + 1
    if reps_y > 2 or reps_x > 2:
        field = field.repeat(1, reps_y, reps_x)
    c = int(rng.integers(4 - channels))
    y = int(rng.integers(field.shape[1] - h + 1))
    x = int(rng.integers(field.shape[2] - w + 1))
    return field[c: c + channels, y: y + h, x: x + w]


def _smooth_noise(rng: np.random.Generator, cells: int, h: int, w: int) -> torch.Tensor:
    """(h, w) smooth noise in [0, 1] with about `cells` features along the longer side."""
    gh, gw = max(2, round(cells * h / max(h, w))), max(2, round(cells * w / max(h, w)))
    coarse = torch.from_numpy(rng.random((1, 1, gh, gw), dtype=np.float32))
    mid = F.interpolate(coarse, size=(max(gh, h // 4), max(gw, w // 4)), mode="bicubic", align_corners=True)
    return F.interpolate(mid, size=(h, w), mode="bilinear", align_corners=True)[0, 0]


def procedural_texture(rng: np.random.Generator, kind: str, colours: tuple, h: int, w: int,
                       period: float = 1.0, angle: float = 0.0) -> torch.Tensor:
    """A (3, h, w) pattern of `kind` in the given colours; `period` scales its features."""
    ys = torch.linspace(-1.0, 1.0, h)[:, None] * (h / max(h, w))
    xs = torch.linspace(-1.0, 1.0, w)[None, :] * (w / max(h, w))
    along = xs * math.cos(angle) + ys * math.sin(angle)
    across = ys * math.cos(angle) - xs * math.sin(angle)
    frequency = float(rng.uniform(3.0, 12.0)) / period
    if kind == "noise":
        t = _smooth_noise(rng, round(4 / period) + 2, h, w).mul_(0.65)
        t.add_(_smooth_noise(rng, round(10 / period) + 3, h, w), alpha=0.35)
        mean = float(t.numpy().mean(dtype=np.float64))  # numpy: torch's sums depend on the thread count
        t = ((t - mean) * float(rng.uniform(2.0, 5.0)) + 0.5).clamp_(0.0, 1.0)
    elif kind == "stripes":
        warp = _smooth_noise(rng, 4, h, w).mul_(float(rng.uniform(0.0, 3.0)))
        t = (torch.sin(warp.add_(along * (math.pi * frequency))) * float(rng.uniform(1.0, 4.0))).clamp_(-1, 1)
        t = t.mul_(0.5).add_(0.5)
    elif kind == "checker":
        t = (torch.sin(along * (math.pi * frequency)) * torch.sin(across * (math.pi * frequency)) * 6).clamp_(-1, 1)
        t = t.mul_(0.5).add_(0.5)
    elif kind == "gradient":
        t = (along * float(rng.uniform(0.3, 1.0)) + 0.5).add_(_smooth_noise(rng, 6, h, w).sub_(0.5).mul_(0.3))
        t = t.clamp_(0.0, 1.0)
    else:
        raise ValueError(f"unknown procedural texture {kind!r}")
    # Piecewise-linear blend through the palette: segment k contributes once t passes k / (K - 1).
    palette = torch.tensor(colours, dtype=torch.float32)[:, :, None, None]
    segments = len(palette) - 1
    texture = palette[0].expand(3, h, w).clone()
    for k in range(segments):
        weight = (t * segments - k).clamp_(0.0, 1.0)
        texture.add_(weight[None] * (palette[k + 1] - palette[k]))
    grain = float(rng.uniform(0.0, 0.04))
    return texture.add_(noise_patch(rng, 3, h, w), alpha=grain)


def make_texture(rng: np.random.Generator, look: Look, bank: AssetBank, s: int) -> torch.Tensor:
    """Render the (3, s, s) texture described by `look`."""
    if look.kind == "photo":
        photo = bank.textures[look.index]
        source, scale = _photo_level(photo, look.zoom)
        texture = _crop(source, look, s, scale)
    elif look.kind == "video":
        texture = _crop(bank.videos[look.index].frames[look.frame], replace(look, zoom=min(look.zoom, 1.0)), s, 1.0)
    else:
        texture = procedural_texture(rng, look.kind, look.colours, s, s, period=look.zoom, angle=look.angle)
    texture = texture * torch.tensor(look.tint, dtype=torch.float32)[:, None, None]
    strength, direction = look.shade
    if strength > 0:
        axis = torch.linspace(-1.0, 1.0, s)
        ramp = axis[None, :] * math.cos(direction) + axis[:, None] * math.sin(direction)
        texture = texture * (1.0 + strength * ramp)
    return texture.clamp_(0.0, 1.0)


def make_sprite(rng: np.random.Generator, look: Look, bank: AssetBank, s: int,
                shape: str | None = None) -> torch.Tensor:
    """A (4, s, s) RGBA sprite: a texture of `look` cut by a random silhouette (of kind `shape`, if given)."""
    alpha = torch.from_numpy(make_shape(rng, s, bank, shape))
    return torch.cat([make_texture(rng, look, bank, s), alpha[None]])
