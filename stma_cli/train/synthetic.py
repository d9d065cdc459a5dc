"""Synthetic training videos: textured objects moving over real footage, with their masks.

A clip is composed in three steps. The background is a real photo, a frame range of a real clip or a
procedural pattern, seen through a moving camera (pan, zoom, small rotation). The objects are sprites
(silhouette + texture) with smooth affine trajectories (velocity with random acceleration), a small
non-rigid wobble, optional motion blur and a drop shadow; they are drawn back to front, occlude each
other, leave and re-enter the frame, and may be swept over by an unannotated occluder. Finally the
frames get lighting drift, sensor noise and JPEG artifacts. Unannotated distractors (label 0), some
looking like an annotated object, keep the model from segmenting whatever moves.

Coordinates are pixels (pixel i spans [i, i+1)); poses and camera maps are 3x3 homogeneous matrices.
"""
from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from stma_cli.errors import StmaError
from stma_cli.train.assets import AssetBank, asset_bank, split_assets
from stma_cli.train.geometry import (
    affine_grid, affine_theta, invert, lerp_rows, rotate_scale, source_window, translate,
)
from stma_cli.train.seeded import ClipKey, SeededClips
from stma_cli.train.sprites import (
    PROCEDURAL_KINDS, Look, make_sprite, noise_patch, procedural_texture, random_look, random_palette, random_tint,
    similar_look,
)


@dataclass(frozen=True)
class SyntheticConfig:
    """Difficulty knobs of the synthetic videos. Speeds are per frame, in units of sqrt(H * W) pixels."""

    min_objects: int = 1
    min_area: float = 0.002
    """Minimum visible area of every annotated object in frame 0, as a fraction of the frame."""
    object_area: tuple[float, float] = (0.012, 0.25)
    """Range of an object's area as a fraction of the frame (log-uniform)."""
    max_speed: float = 0.06
    max_rotation: float = 5.0
    """Degrees per frame (standard deviation)."""
    max_zoom: float = 0.03
    """Change of log-scale per frame (standard deviation)."""
    deformation: float = 0.04
    """Amplitude of the non-rigid wobble, as a fraction of the object's size."""
    camera_motion: float = 1.0
    max_distractors: int = 2
    p_similar: float = 0.3
    """Chance that a distractor (or a second annotated object) copies the look of an annotated one."""
    p_occluder: float = 0.2
    """Chance of an unannotated object sweeping over an annotated one, hiding it for a while."""
    p_leave: float = 0.15
    """Chance, per object, that its trajectory may leave the frame (it is pulled back later)."""
    p_follow: float = 0.4
    """Chance, per object, that the camera follows it (it stays put while the background moves)."""
    p_video_background: float = 0.5
    """Chance of a real clip as background (else a photo, or a procedural pattern)."""
    p_procedural_background: float = 0.1
    p_scene_cut: float = 0.05
    """Chance that the background switches abruptly to another source mid-clip (objects stay)."""
    p_shot_change: float = 0.0
    """Chance of a cut to another shot (another background, none of the clip's annotated objects, but its
    unannotated look-alikes) for a while, usually followed by a cut back to the first shot, where the
    objects are found again."""
    p_blur: float = 0.15
    """Chance of a soft clip: photo backgrounds from a coarser pyramid level, sprites at half resolution."""
    p_motion_blur: float = 0.1
    """Chance, per fast object and per moving camera, of motion blur."""
    p_shadow: float = 0.25
    """Chance, per object, of a soft drop shadow (not part of its mask)."""
    p_noise: float = 0.4
    p_jpeg: float = 0.05
    photometric: float = 1.0
    """Strength of the brightness, contrast and colour drift over the clip."""

    def __post_init__(self) -> None:
        low, high = self.object_area
        if not 0 < low <= high < 1:
            raise StmaError(f"SyntheticConfig.object_area={self.object_area}: need 0 < low <= high < 1")
        if self.min_objects < 1:
            raise StmaError(f"SyntheticConfig.min_objects={self.min_objects}: need at least 1")


TRAIN_CONFIG = SyntheticConfig(object_area=(0.012, 0.5), p_shot_change=0.3)
"""Training scenes: objects up to half the frame (large objects must stay whole), and shot changes."""
HELDOUT_CONFIG = SyntheticConfig(
    min_objects=2, object_area=(0.01, 0.12), max_speed=0.012, max_rotation=1.5, max_zoom=0.008,
    deformation=0.03, camera_motion=0.4, p_occluder=0.4, p_leave=0.2, p_video_background=0.3,
    p_procedural_background=0.05, p_scene_cut=0.0, p_blur=0.1, p_noise=0.3, p_jpeg=0.0, photometric=0.4,
)
"""Settings of the held-out sequences: consecutive 24 fps-like frames, milder changes, 2-3 objects."""

_COUNT_WEIGHTS = {1: 1.0, 2: 2.0, 3: 2.0}


def walk(rng: np.random.Generator, steps: int, start: np.ndarray, velocity: np.ndarray, accel: float,
          low: np.ndarray | float, high: np.ndarray | float, max_speed: float, pull: float = 0.08) -> np.ndarray:
    """(steps, D) positions of a point with random acceleration, pulled back (and damped) outside [low, high]."""
    x, v = np.asarray(start, dtype=np.float64).copy(), np.asarray(velocity, dtype=np.float64).copy()
    kicks = rng.normal(0.0, accel, (steps, x.size))
    path = np.empty((steps, x.size))
    for t in range(steps):
        path[t] = x
        outside = np.clip(x, low, high) - x
        v = (v + kicks[t] + pull * outside) * np.where(outside != 0, 0.85, 1.0)
        speed = math.sqrt(float(v @ v))
        if speed > max_speed:
            v *= max_speed / speed
        x = x + v
    return path


def _ease(steps: int) -> np.ndarray:
    """0 .. 1 over `steps` frames with a smooth start and end."""
    u = np.linspace(0.0, 1.0, steps) if steps > 1 else np.zeros(1)
    return u * u * (3.0 - 2.0 * u)


@dataclass(eq=False)
class _Background:
    """A background source seen through a moving camera."""

    source: torch.Tensor
    """(3, h, w) float image, or (N, h, w, 3) uint8 video frames."""
    out_to_src: np.ndarray
    """(T, 3, 3): output pixels -> source pixels, per frame."""
    frame_index: np.ndarray | None
    """Video frame per output frame (None for still images)."""
    tint: tuple[float, float, float]
    motion_blur: bool
    identity: tuple[str, int]
    """("photo" | "video" | "procedural", index) for objects cut from the same source."""

    def render(self, first: int, last: int, size: tuple[int, int]) -> torch.Tensor:
        """Frames first..last-1 as a (n, 3, H, W) float tensor."""
        count = last - first
        offsets = (-0.35, 0.0, 0.35) if self.motion_blur else (0.0,)
        maps = [np.stack([lerp_rows(self.out_to_src, t + offset) for t in range(first, last)]) for offset in offsets]
        if self.frame_index is None:
            src = self.source[None].expand(count, -1, -1, -1)
        else:
            x0, y0, x1, y1 = source_window(np.stack(maps), size, tuple(self.source.shape[1:3]))
            frames = self.source[torch.from_numpy(self.frame_index[first:last]), y0:y1, x0:x1]
            src = frames.permute(0, 3, 1, 2).float().div_(255.0)
            maps = [translate(-x0, -y0) @ m for m in maps]
        result = None
        for out_to_src in maps:
            theta = np.stack([affine_theta(tuple(src.shape[2:]), m, size) for m in out_to_src])
            sample = F.grid_sample(src, affine_grid(theta, *size), mode="bilinear", padding_mode="border",
                                   align_corners=False)
            result = sample if result is None else result.add_(sample)
        if len(maps) > 1:
            result.div_(len(maps))
        if self.tint != (1.0, 1.0, 1.0):
            result.mul_(torch.tensor(self.tint, dtype=torch.float32)[:, None, None])
        return result


def plan_background(rng: np.random.Generator, bank: AssetBank, cfg: SyntheticConfig, steps: int,
                     size: tuple[int, int], soft: bool) -> _Background:
    H, W = size
    draw = rng.random()
    frame_index = None
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    if draw < cfg.p_video_background and bank.videos:
        index = int(rng.integers(len(bank.videos)))
        video = bank.videos[index].frames
        count, h, w = video.shape[:3]
        stride = int(rng.integers(1, 3)) * (1 if rng.random() < 0.7 else -1)
        period = 2 * (count - 1)
        raw = (int(rng.integers(count)) + stride * np.arange(steps)) % period
        frame_index = np.where(raw < count, raw, period - raw).astype(np.int64)
        source, level_scale, identity = video, 1.0, ("video", index)
        zoom_range = (0.7, 0.98)
    elif draw < cfg.p_video_background + cfg.p_procedural_background:
        kind = PROCEDURAL_KINDS[int(rng.integers(len(PROCEDURAL_KINDS)))]
        h, w = round(0.75 * H), round(0.75 * W)
        palette = random_palette(rng, bank, int(rng.integers(2, 4)))
        source = procedural_texture(rng, kind, palette, h, w, period=float(rng.uniform(0.5, 2.0)),
                                    angle=float(rng.uniform(0, math.pi))).clamp_(0.0, 1.0)
        level_scale, identity, zoom_range = 1.0, ("procedural", 0), (0.5, 0.95)
    else:
        index = int(rng.integers(len(bank.photos)))
        photo = bank.photos[index]
        h, w = photo.levels[0].shape[1:]
        tint = random_tint(rng, photo.gray)
        identity, zoom_range = ("photo", index), (0.4, 0.95)
        source, level_scale = None, 1.0
    sigma_max = min(h / H, w / W)
    sigma0 = sigma_max * rng.uniform(*zoom_range)
    unit = math.sqrt(H * W)
    motion = cfg.camera_motion * rng.uniform(0.0, 1.0) ** 2
    heading = rng.uniform(0, 2 * math.pi)
    pan_speed = motion * 0.04 * unit * sigma0
    half_w, half_h = 0.5 * W * sigma0, 0.5 * H * sigma0
    low, high = np.array([half_w, half_h]), np.array([w - half_w, h - half_h])
    centre = walk(rng, steps, rng.uniform(low, np.maximum(high, low)),
                   pan_speed * np.array([math.cos(heading), math.sin(heading)]),
                   0.2 * pan_speed + 1e-3, low, high, max_speed=2 * pan_speed + 1e-3)
    log_zoom = walk(rng, steps, np.array([math.log(sigma0)]), rng.normal(0, 0.015 * cfg.camera_motion, 1),
                     0.003 * cfg.camera_motion, math.log(0.35 * sigma_max), math.log(sigma_max), max_speed=0.05)
    angle = walk(rng, steps, np.array([rng.normal(0, 0.03 * cfg.camera_motion)]),
                  rng.normal(0, math.radians(0.4) * cfg.camera_motion, 1), math.radians(0.1) * cfg.camera_motion,
                  -0.15, 0.15, max_speed=math.radians(2.0))
    # Keep the (rotated) view inside the source: cap the zoom, then clamp the centre.
    cos, sin = np.abs(np.cos(angle[:, 0])), np.abs(np.sin(angle[:, 0]))
    extent_w, extent_h = W * cos + H * sin, W * sin + H * cos
    sigma = np.minimum(np.exp(log_zoom[:, 0]), 0.98 * np.minimum(w / extent_w, h / extent_h))
    for axis, (extent, size_src) in enumerate(((extent_w, w), (extent_h, h))):
        half = 0.5 * sigma * extent
        centre[:, axis] = np.clip(centre[:, axis], half, size_src - half)
    if source is None:
        level = int(np.clip(round(math.log2(max(sigma0, 1e-3))) + int(soft), 0, len(photo.levels) - 1))
        source, level_scale = photo.levels[level], 0.5 ** level
    out_to_src = np.stack([
        np.diag([level_scale, level_scale, 1.0]) @ translate(*centre[t]) @ rotate_scale(angle[t, 0], sigma[t])
        @ translate(-W / 2, -H / 2)
        for t in range(steps)
    ])
    motion_blur = bool(rng.random() < cfg.p_motion_blur and motion > 0.3)
    return _Background(source, out_to_src, frame_index, tint, motion_blur, identity)


@dataclass(eq=False)
class SceneObject:
    """A sprite and its trajectory."""

    sprite: torch.Tensor
    """(4, s, s) RGBA, plus a blurred alpha as fifth channel when the object casts a shadow."""
    label: int
    """1..n for annotated objects, 0 for distractors."""
    poses: np.ndarray
    """(T, 4): x, y (frame-0 pixels), angle (radians), log of display pixels per sprite pixel."""
    follows_camera: bool
    wobble: np.ndarray | None
    """(2, K, 5) per displacement axis and component: amplitude, x and y frequency, phase, phase rate."""
    gains: np.ndarray
    """(T, 3) lighting change."""
    motion_blur: bool
    shadow: tuple[int, int, float] | None
    """Offset (dx, dy) in pixels and darkness of a drop shadow."""
    corners: np.ndarray
    """(3, 4) homogeneous sprite-pixel corners of the silhouette's bounding box."""
    shape: str | None = None
    """The silhouette's kind, when it was chosen by the caller."""

    def matrix(self, cameras: np.ndarray, t: float) -> np.ndarray:
        """Sprite pixels -> output pixels of (fractional) frame t."""
        x, y, angle, log_scale = lerp_rows(self.poses, t)
        s = self.sprite.shape[-1]
        pose = translate(x, y) @ rotate_scale(angle, math.exp(log_scale)) @ translate(-s / 2, -s / 2)
        return pose if self.follows_camera else lerp_rows(cameras, t) @ pose


def _sprite_grid(obj: SceneObject, matrix: np.ndarray, box: tuple[int, int, int, int], t: float) -> torch.Tensor:
    """grid_sample grid (1, h, w, 2) of the output box (x0, y0, x1, y1) into the sprite, wobble included."""
    x0, y0, x1, y1 = box
    h, w = y1 - y0, x1 - x0
    s = obj.sprite.shape[-1]
    box_to_sprite = invert(matrix) @ translate(x0, y0)
    if obj.wobble is None:
        return affine_grid(affine_theta((s, s), box_to_sprite, (h, w)), h, w)
    # The wobble is smooth: evaluate affine map + displacement on a coarse lattice of pixel centres and
    # upsample (exact for the affine part).
    us = np.linspace(0.5, w - 0.5, max(2, w // 16 + 1))
    vs = np.linspace(0.5, h - 0.5, max(2, h // 16 + 1))
    lattice = np.stack([*np.meshgrid(us, vs), np.ones((len(vs), len(us)))])
    sprite_px = np.einsum("ij,jhw->ihw", box_to_sprite[:2], lattice)
    unit = sprite_px * (2.0 / s) - 1.0
    amplitude, fx, fy, phase, rate = (obj.wobble[..., k, None, None] for k in range(5))
    unit += (amplitude * np.sin(fx * unit[0] + fy * unit[1] + phase + rate * t)).sum(1)
    coarse = torch.from_numpy(unit.astype(np.float32))[None]
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True).permute(0, 2, 3, 1)


def _sample_sprite(obj: SceneObject, matrix: np.ndarray, box: tuple[int, int, int, int], t: float) -> torch.Tensor:
    """The sprite drawn into the output box (x0, y0, x1, y1): (4, h, w) RGBA."""
    grid = _sprite_grid(obj, matrix, box, t)
    return F.grid_sample(obj.sprite[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def _draw_object(obj: SceneObject, cameras: np.ndarray, t: int, frame: torch.Tensor, labels: torch.Tensor) -> None:
    """Composite `obj` onto frame t (in place) and paint its label where it is opaque."""
    H, W = labels.shape
    times = (t - 0.33, t, t + 0.33) if obj.motion_blur else (float(t),)
    matrices = [obj.matrix(cameras, time) for time in times]
    s = obj.sprite.shape[-1]
    points = np.concatenate([(m @ obj.corners)[:2] for m in matrices], axis=1)
    margin = 2 + (0 if obj.wobble is None else float(obj.wobble[:, :, 0].sum(1).max()) * 0.5 * s
                  * math.exp(float(obj.poses[:, 3].max())))
    x0, y0 = (max(0, int(math.floor(v - margin))) for v in points.min(1))
    x1, y1 = (min(limit, int(math.ceil(v + margin))) for v, limit in zip(points.max(1), (W, H)))
    if x1 <= x0 or y1 <= y0:
        return
    box = (x0, y0, x1, y1)
    rgba = _sample_sprite(obj, matrices[0], box, times[0])
    for matrix, time in zip(matrices[1:], times[1:]):
        rgba.add_(_sample_sprite(obj, matrix, box, time))
    if len(matrices) > 1:
        rgba.div_(len(matrices))
    alpha = rgba[3]
    if obj.shadow is not None:
        dx, dy, darkness = obj.shadow
        sx0, sy0, sx1, sy1 = max(0, x0 + dx), max(0, y0 + dy), min(W, x1 + dx), min(H, y1 + dy)
        if sx1 > sx0 and sy1 > sy0:
            shade = rgba[4, sy0 - y0 - dy: sy1 - y0 - dy, sx0 - x0 - dx: sx1 - x0 - dx]
            frame[:, sy0:sy1, sx0:sx1].mul_(1.0 - darkness * shade)
    rgb = rgba[:3].mul_(torch.from_numpy(obj.gains[t]).float()[:, None, None])
    frame[:, y0:y1, x0:x1].lerp_(rgb, alpha.expand_as(rgb))
    # Paint the label where the object is opaque (arithmetic: masked_fill_ is several times slower on CPU).
    opaque = alpha > 0.5
    region = labels[y0:y1, x0:x1].mul_(opaque.logical_not())
    if obj.label:
        region.add_(opaque.to(torch.uint8).mul_(obj.label))


def _silhouette_corners(alpha: torch.Tensor) -> np.ndarray:
    rows = torch.nonzero(alpha.amax(1) > 0.0)
    cols = torch.nonzero(alpha.amax(0) > 0.0)
    if len(rows) == 0:
        rows = cols = torch.tensor([[0], [alpha.shape[0] - 1]])
    y0, y1, x0, x1 = float(rows[0]), float(rows[-1]) + 1, float(cols[0]), float(cols[-1]) + 1
    return np.array([[x0, x1, x0, x1], [y0, y0, y1, y1], [1.0, 1.0, 1.0, 1.0]])


def _alpha_area(sprite: torch.Tensor) -> float:
    """Sum of the alpha channel, computed in numpy: torch's multi-threaded sums depend on the thread count."""
    return float(sprite[3].numpy().sum(dtype=np.float64))


def _sprite_side(area_px: float, soft: bool) -> int:
    side = int(np.clip(round(math.sqrt(area_px / 0.5)), 32, 256))
    return max(24, side // 2) if soft else side


def plan_object(rng: np.random.Generator, bank: AssetBank, cfg: SyntheticConfig, steps: int,
                 size: tuple[int, int], label: int, look: Look, soft: bool, shape: str | None = None,
                 area: float | None = None) -> SceneObject:
    H, W = size
    unit = math.sqrt(H * W)
    if area is None:
        area = math.exp(rng.uniform(*np.log(cfg.object_area)))
    area_px = max(area * H * W, 64.0)  # a degenerate target (e.g. an empty sprite) must not give area 0
    sprite = make_sprite(rng, look, bank, _sprite_side(area_px, soft), shape)
    log_scale0 = 0.5 * math.log(area_px / max(_alpha_area(sprite), 1.0))
    if label > 0:
        start = rng.uniform([0.2 * W, 0.2 * H], [0.8 * W, 0.8 * H])
    else:
        start = rng.uniform([-0.1 * W, -0.1 * H], [1.1 * W, 1.1 * H])
    speed = cfg.max_speed * unit * math.exp(rng.uniform(math.log(0.03), 0.0))
    heading = rng.uniform(0, 2 * math.pi)
    velocity = speed * np.array([math.cos(heading), math.sin(heading)])
    margin = 0.4 if rng.random() < cfg.p_leave else -0.1
    low, high = np.array([-margin * W, -margin * H]), np.array([(1 + margin) * W, (1 + margin) * H])
    position = walk(rng, steps, start, velocity, 0.25 * speed, low, high, max_speed=2.0 * speed)
    spin = math.radians(cfg.max_rotation)
    angle = walk(rng, steps, np.array([rng.uniform(-math.pi, math.pi)]), rng.normal(0, spin, 1), 0.2 * spin,
                  -np.inf, np.inf, max_speed=3 * spin)
    log_scale = walk(rng, steps, np.array([log_scale0]), rng.normal(0, cfg.max_zoom, 1), 0.2 * cfg.max_zoom,
                      log_scale0 - math.log(1.6), log_scale0 + math.log(1.6), max_speed=3 * cfg.max_zoom + 1e-6)
    wobble = None
    if cfg.deformation > 0 and rng.random() < 0.5:
        components = 2
        wobble = np.stack([
            rng.uniform(0, cfg.deformation, (2, components)),
            rng.uniform(-4, 4, (2, components)),
            rng.uniform(-4, 4, (2, components)),
            rng.uniform(0, 2 * math.pi, (2, components)),
            rng.uniform(-0.5, 0.5, (2, components)),
        ], axis=-1)
    lighting = np.exp(rng.normal(0, 0.08 * cfg.photometric) + rng.normal(0, 0.03 * cfg.photometric, 3))
    gains = 1.0 + _ease(steps)[:, None] * (lighting - 1.0)[None, :]
    shadow = None
    corners = _silhouette_corners(sprite[3])
    if rng.random() < cfg.p_shadow:
        reach = 0.12 * math.sqrt(area_px)
        shadow = (int(rng.normal(0, reach)), int(abs(rng.normal(0, reach))), float(rng.uniform(0.25, 0.6)))
        side = sprite.shape[-1]
        coarse = F.interpolate(sprite[None, 3:], size=(max(2, side // 8),) * 2, mode="area")
        sprite = torch.cat([sprite, F.interpolate(coarse, size=(side, side), mode="bilinear")[0]])
    return SceneObject(
        sprite=sprite,
        label=label,
        poses=np.concatenate([position, angle, log_scale], axis=1),
        follows_camera=bool(rng.random() < cfg.p_follow),
        wobble=wobble,
        gains=gains,
        motion_blur=bool(rng.random() < cfg.p_motion_blur and speed > 0.015 * unit),
        shadow=shadow,
        corners=corners,
        shape=shape,
    )


def _plan_occluder(rng: np.random.Generator, bank: AssetBank, cfg: SyntheticConfig, steps: int,
                   size: tuple[int, int], target: SceneObject, background: tuple[str, int], soft: bool) -> SceneObject:
    """An unannotated object crossing in front of `target`, covering it around a middle frame."""
    H, W = size
    target_area = _alpha_area(target.sprite) * math.exp(2 * target.poses[0, 3])
    area = min(target_area * rng.uniform(1.8, 3.0), 0.35 * H * W) / (H * W)
    kind = ("ellipse", "blob", "bar", "limbs", "noise")[int(rng.integers(5))]
    occluder = plan_object(rng, bank, cfg, steps, size, 0, random_look(rng, bank, background), soft, kind, area)
    crossing = int(rng.integers(max(1, steps // 3), max(2, (2 * steps) // 3 + 1)))
    centre = lerp_rows(target.poses, crossing)[:2]
    heading = rng.uniform(0, 2 * math.pi)
    reach = math.sqrt(target_area) + math.sqrt(area * H * W)
    speed = 1.2 * reach / crossing
    direction = np.array([math.cos(heading), math.sin(heading)])
    times = np.arange(steps, dtype=np.float64)[:, None] - crossing
    occluder.poses[:, :2] = centre + speed * times * direction
    occluder.poses[:, 2] = occluder.poses[0, 2] + 0.2 * (occluder.poses[:, 2] - occluder.poses[0, 2])
    occluder.follows_camera = target.follows_camera
    occluder.motion_blur = False
    return occluder


def _distractor_count(rng: np.random.Generator, most: int) -> int:
    """0..most, each one less likely than the one before (weights 1, 0.6, 0.36, ...)."""
    weights = 0.6 ** np.arange(most + 1)
    return int(rng.choice(most + 1, p=weights / weights.sum()))


def _object_count(rng: np.random.Generator, low: int, high: int) -> int:
    counts = list(range(low, high + 1))
    weights = np.array([_COUNT_WEIGHTS.get(k, 1.0) for k in counts])
    return counts[int(rng.choice(len(counts), p=weights / weights.sum()))]


def photometric(rng: np.random.Generator, frames: torch.Tensor, cfg: SyntheticConfig) -> None:
    """Lighting drift, sensor noise and JPEG artifacts, in place; leaves values in [0, 1]."""
    steps, _, H, W = frames.shape
    strength = cfg.photometric
    ease = _ease(steps)
    ends = [np.exp(rng.normal(0, 0.15 * strength) + rng.normal(0, 0.05 * strength, 3)) for _ in range(2)]
    contrast = np.exp(rng.normal(0, 0.12 * strength, 2))
    bias = rng.normal(0, 0.03 * strength, 2)
    for t in range(steps):
        c = contrast[0] + ease[t] * (contrast[1] - contrast[0])
        gain = (ends[0] + ease[t] * (ends[1] - ends[0])) * c
        offset = bias[0] + ease[t] * (bias[1] - bias[0]) + 0.5 * (1.0 - c)
        frames[t].mul_(torch.from_numpy(gain).float()[:, None, None]).add_(float(offset))
    if rng.random() < cfg.p_noise:
        sigma = float(rng.uniform(0.004, 0.03))
        for t in range(steps):
            frames[t].add_(noise_patch(rng, 3, H, W), alpha=sigma)
    frames.clamp_(0.0, 1.0)
    if rng.random() < cfg.p_jpeg:
        quality = int(rng.integers(30, 90))
        pixels = frames.mul(255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
        for t in range(steps):
            buffer = io.BytesIO()
            Image.fromarray(pixels[t]).save(buffer, format="JPEG", quality=quality)
            with Image.open(buffer) as decoded:
                pixels[t] = np.asarray(decoded)
        frames.copy_(torch.from_numpy(pixels).permute(0, 3, 1, 2)).div_(255.0)


@dataclass(eq=False)
class Scene:
    backgrounds: list[tuple[_Background, int, int]]
    """Background sources with the frame range each one covers (a scene cut switches source)."""
    cameras: np.ndarray
    """(T, 3, 3): frame-0 pixels -> frame-t pixels of the scene behind the objects."""
    objects: list[SceneObject]
    """Back to front."""
    front: int = 0
    """How many of the last objects are occluders that stay in front of every other object."""
    away: tuple[int, int] | None = None
    """Frames [start, end) of another shot: none of the annotated objects is drawn there (unannotated ones are)."""


def _plan_scene(rng: np.random.Generator, bank: AssetBank, cfg: SyntheticConfig, steps: int,
                size: tuple[int, int], max_objects: int) -> Scene:
    soft = bool(rng.random() < cfg.p_blur)
    background = plan_background(rng, bank, cfg, steps, size, soft)
    backgrounds = [(background, 0, steps)]
    if steps >= 3 and rng.random() < cfg.p_scene_cut:
        cut = int(rng.integers(1, steps))
        backgrounds = [(background, 0, cut), (plan_background(rng, bank, cfg, steps, size, soft), cut, steps)]
    cameras = np.linalg.inv(background.out_to_src) @ background.out_to_src[0]
    count = _object_count(rng, min(cfg.min_objects, max_objects), max_objects)
    looks: list[Look] = []
    annotated: list[SceneObject] = []
    for label in range(1, count + 1):
        if looks and rng.random() < 0.5 * cfg.p_similar:
            look = similar_look(rng, looks[int(rng.integers(len(looks)))])
        else:
            look = random_look(rng, bank, background.identity)
        looks.append(look)
        annotated.append(plan_object(rng, bank, cfg, steps, size, label, look, soft))
    distractors = []
    for _ in range(_distractor_count(rng, cfg.max_distractors)):
        if rng.random() < cfg.p_similar:
            look = similar_look(rng, looks[int(rng.integers(len(looks)))])
        else:
            look = random_look(rng, bank, background.identity)
        distractors.append(plan_object(rng, bank, cfg, steps, size, 0, look, soft))
    objects = annotated + distractors
    objects = [objects[k] for k in rng.permutation(len(objects))]
    if steps >= 2 and rng.random() < cfg.p_occluder:
        target = annotated[int(rng.integers(len(annotated)))]
        objects.append(_plan_occluder(rng, bank, cfg, steps, size, target, background.identity, soft))
    away = None
    if cfg.p_shot_change and steps >= 4 and rng.random() < cfg.p_shot_change:
        start = int(rng.integers(1, steps - 1))
        end = int(rng.integers(start + 1, steps + 1)) if rng.random() < 0.8 else steps  # mostly a cut back
        other = plan_background(rng, bank, cfg, steps, size, soft)
        backgrounds = cut_in(backgrounds, other, start, end)
        away = (start, end)
    return Scene(backgrounds, cameras, objects, away=away)


def cut_in(backgrounds: list[tuple[_Background, int, int]], other: _Background, start: int,
           end: int) -> list[tuple[_Background, int, int]]:
    """The background ranges with `other` shown on frames [start, end) instead."""
    ranges = [(b, first, min(last, start)) for b, first, last in backgrounds if first < start]
    ranges.append((other, start, end))
    ranges += [(b, max(first, end), last) for b, first, last in backgrounds if last > end]
    return ranges


def _draw_frame(scene: Scene, t: int, frame: torch.Tensor, labels: torch.Tensor) -> None:
    away = scene.away is not None and scene.away[0] <= t < scene.away[1]
    for obj in scene.objects:
        if not (away and obj.label):  # another shot: none of the annotated objects, but look-alikes may be there
            _draw_object(obj, scene.cameras, t, frame, labels)


def _visible_labels(labels: torch.Tensor, count: int, min_pixels: float) -> list[int]:
    areas = torch.bincount(labels.flatten(), minlength=count + 1)
    return [label for label in range(1, count + 1) if areas[label] >= min_pixels]


def render_clip(rng: np.random.Generator, bank: AssetBank, cfg: SyntheticConfig, steps: int,
                size: tuple[int, int], max_objects: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Compose one clip: (T, 3, H, W) float frames in [0, 1], (T, H, W) int64 labels, number of objects.

    Every annotated object covers at least `cfg.min_area` of frame 0; labels are 1..n.
    """
    return render_scene(rng, lambda: _plan_scene(rng, bank, cfg, steps, size, max_objects), range(steps), size, cfg)


def render_scene(rng: np.random.Generator, plan: Callable[[], Scene], times: Sequence[int], size: tuple[int, int],
                 cfg: SyntheticConfig, require_all: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Render the scene `plan()` makes at the frame times `times` (increasing, from 0), with labels 1..n.

    Annotated objects hidden in frame 0 are drawn in front of the others (occluders stay in front);
    those still covering less than `cfg.min_area` of frame 0 are dropped, and the scene is planned
    again if none is left (or, with `require_all`, if any is).
    """
    H, W = size
    times = list(times)
    min_pixels = cfg.min_area * H * W
    while True:
        scene = plan()
        frames = _render_backgrounds(scene, times, size)
        labels = torch.zeros((len(times), H, W), dtype=torch.uint8)
        annotated = [obj for obj in scene.objects if obj.label > 0]
        first_background = frames[0].clone()
        _draw_frame(scene, 0, frames[0], labels[0])
        visible = _visible_labels(labels[0], len(annotated), min_pixels)
        if len(visible) < len(annotated):
            hidden = [obj for obj in scene.objects if 0 < obj.label and obj.label not in visible]
            rest = [obj for obj in scene.objects if obj not in hidden]
            behind = len(rest) - scene.front
            scene.objects = rest[:behind] + hidden + rest[behind:]
            frames[0].copy_(first_background)
            labels[0].zero_()
            _draw_frame(scene, 0, frames[0], labels[0])
            visible = _visible_labels(labels[0], len(annotated), min_pixels)
        if visible and (len(visible) == len(annotated) or not require_all):
            break
    relabel = torch.zeros(len(annotated) + 1, dtype=torch.uint8)
    for new, old in enumerate(visible, start=1):
        relabel[old] = new
    labels[0] = relabel[labels[0].long()]
    for obj in annotated:
        obj.label = int(relabel[obj.label])
    for index, t in enumerate(times[1:], start=1):
        _draw_frame(scene, t, frames[index], labels[index])
    photometric(rng, frames, cfg)
    return frames, labels.long(), len(visible)


def _render_backgrounds(scene: Scene, times: list[int], size: tuple[int, int]) -> torch.Tensor:
    """The background of each frame time, (len(times), 3, H, W); runs of consecutive frames render together."""
    parts = []
    for background, first, last in scene.backgrounds:
        inside = [t for t in times if first <= t < last]
        while inside:
            run = next((i for i in range(1, len(inside)) if inside[i] != inside[i - 1] + 1), len(inside))
            parts.append(background.render(inside[0], inside[run - 1] + 1, size))
            inside = inside[run:]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def check_clip_args(num_frames: int, size: tuple[int, int], max_objects: int, seed: int, length: int) -> None:
    """Validate the arguments shared by the generated datasets."""
    if num_frames < 1:
        raise StmaError(f"num_frames={num_frames}: need at least 1 frame")
    if len(size) != 2 or min(size) < 32:
        raise StmaError(f"size={tuple(size)}: need (height, width), each at least 32 pixels")
    if max_objects < 1:
        raise StmaError(f"max_objects={max_objects}: need at least 1")
    if seed < 0 or length < 0:
        raise StmaError(f"seed={seed}, length={length}: both must be non-negative")


class SyntheticVideos(SeededClips):
    """Map-style dataset of synthetic clips; item i of seed s is a pure function of (s, i).

    Items: {"frames": (T, 3, H, W) float32 in [0, 1], "masks": (T, H, W) int64 labels 0..n,
    "num_objects": n}. Every object is visible in frame 0.
    """

    STREAM = 0

    def __init__(self, seed: int, length: int, num_frames: int = 5, size: tuple[int, int] = (384, 384),
                 max_objects: int = 3, assets: str = "train", config: SyntheticConfig | None = None) -> None:
        check_clip_args(num_frames, size, max_objects, seed, length)
        split_assets(assets)
        self.seed, self.length, self.num_frames = seed, length, num_frames
        self.size = (int(size[0]), int(size[1]))
        self.max_objects, self.assets = max_objects, assets
        self.config = config or (HELDOUT_CONFIG if assets == "heldout" else TRAIN_CONFIG)

    def __getitem__(self, key: int | ClipKey) -> dict:
        index, max_skip = self.unpack(key, 1)
        rng = self.rng(index)
        bank = asset_bank(self.assets)
        if max_skip == 1:
            frames, masks, count = render_clip(rng, bank, self.config, self.num_frames, self.size, self.max_objects)
        else:  # a longer scene, seen at frames up to max_skip apart
            times = sample_times(rng, self.num_frames, max_skip)
            span = times[-1] + 1
            frames, masks, count = render_scene(
                rng, lambda: _plan_scene(rng, bank, self.config, span, self.size, self.max_objects), times, self.size,
                self.config)
        return {"frames": frames, "masks": masks, "num_objects": count}


def sample_times(rng: np.random.Generator, count: int, max_skip: int) -> list[int]:
    """`count` increasing frame times from 0, with gaps drawn from 1..max_skip."""
    gaps = rng.integers(1, max_skip + 1, size=count - 1)
    return [0] + np.cumsum(gaps).astype(int).tolist()
