"""Pseudo-videos: one still image with object masks, warped by a random affine + elastic map per frame.

This is the static-image pre-training of STM-style models: the still is a synthetic composite (real-photo
cut-outs and textured shapes pasted on a real photo or video frame). Frame 0 is the centre of the still;
every later frame is an independent random warp of it, applied to image and masks together, so that the
model learns to match an object across large appearance changes before it sees smooth motion. The still
is rendered with a margin around the frame, so that warps (zooming out, rotating) show more of the scene
instead of an artificial border.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from stma_cli.train.assets import asset_bank, split_assets
from stma_cli.train.geometry import invert, rotate_scale, translate
from stma_cli.train.synthetic import TRAIN_CONFIG, SyntheticConfig, check_clip_args, photometric, render_clip
from stma_cli.train.seeded import ClipKey, SeededClips


@dataclass(frozen=True)
class PseudoConfig:
    """Strength of the per-frame warps, and the settings of the still image."""

    max_rotation: float = 15.0
    """Degrees."""
    max_shear: float = 10.0
    """Degrees."""
    scale: tuple[float, float] = (0.85, 1.25)
    """Zoom factor range (below 1 zooms out)."""
    max_translation: float = 0.1
    """Fraction of the frame size."""
    elastic: float = 0.015
    """Amplitude of the elastic displacement, fraction of the frame size."""
    margin: float = 1.3
    """Size of the rendered still relative to the frame."""
    scene: SyntheticConfig = replace(TRAIN_CONFIG, max_speed=0.0, max_rotation=0.0, max_zoom=0.0, camera_motion=0.0,
                                     p_occluder=0.0, p_motion_blur=0.0, p_scene_cut=0.0)
    """The still's composition (object areas are fractions of the frame); its photometric settings apply
    to the warped frames."""


def _warp(rng: np.random.Generator, cfg: PseudoConfig, out_hw: tuple[int, int],
          still_hw: tuple[int, int]) -> np.ndarray:
    """A random 3x3 map from output pixels to still pixels, around the centres of both."""
    (H, W), (h, w) = out_hw, still_hw
    angle = math.radians(rng.uniform(-cfg.max_rotation, cfg.max_rotation))
    shear = math.tan(math.radians(rng.uniform(-cfg.max_shear, cfg.max_shear)))
    scale = math.exp(rng.uniform(*np.log(cfg.scale)))
    shift = rng.uniform(-cfg.max_translation, cfg.max_translation, 2) * (W, H)
    shear_map = np.array([[1.0, shear, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    forward = (translate(W / 2 + shift[0], H / 2 + shift[1]) @ rotate_scale(angle, scale) @ shear_map
               @ translate(-w / 2, -h / 2))
    return invert(forward)


def _warp_grids(rng: np.random.Generator, cfg: PseudoConfig, count: int, out_hw: tuple[int, int],
                still_hw: tuple[int, int]) -> torch.Tensor:
    """(count, H, W, 2) grid_sample grids: random affine + elastic maps from output frames into the still.

    Both parts are smooth, so they are evaluated on a lattice of every 8th pixel centre and upsampled
    (exact for the affine part).
    """
    (H, W), (h, w) = out_hw, still_hw
    us = np.linspace(0.5, W - 0.5, max(2, W // 8 + 1))
    vs = np.linspace(0.5, H - 0.5, max(2, H // 8 + 1))
    lattice = np.stack([*np.meshgrid(us, vs), np.ones((len(vs), len(us)))])
    to_unit = np.array([2.0 / w, 2.0 / h])[:, None, None]
    affine = np.stack([np.einsum("ij,jhw->ihw", _warp(rng, cfg, out_hw, still_hw)[:2], lattice) * to_unit - 1.0
                       for _ in range(count)])
    noise = torch.from_numpy(rng.normal(0.0, 2.0 * cfg.elastic, (count, 2, 5, 5)).astype(np.float32))
    elastic = F.interpolate(noise, size=(len(vs), len(us)), mode="bicubic", align_corners=True)
    coarse = torch.from_numpy(affine.astype(np.float32)) + elastic
    return F.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=True).permute(0, 2, 3, 1)


class PseudoVideos(SeededClips):
    """Map-style dataset of pseudo-videos; item i of seed s is a pure function of (s, i).

    Items as SyntheticVideos: {"frames": (T, 3, H, W) float32 in [0, 1], "masks": (T, H, W) int64,
    "num_objects": n}; frame 0 is the unwarped centre of the still, where every object is visible.
    """

    STREAM = 1

    def __init__(self, seed: int, length: int, num_frames: int = 5, size: tuple[int, int] = (384, 384),
                 max_objects: int = 3, assets: str = "train", config: PseudoConfig | None = None) -> None:
        check_clip_args(num_frames, size, max_objects, seed, length)
        split_assets(assets)
        self.seed, self.length, self.num_frames = seed, length, num_frames
        self.size = (int(size[0]), int(size[1]))
        self.max_objects, self.assets = max_objects, assets
        self.config = config or PseudoConfig()

    def _still(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The still (1, 3, h, w), its labels (1, h, w) and the number of objects visible in its centre."""
        cfg = self.config
        H, W = self.size
        still_hw = (round(H * cfg.margin), round(W * cfg.margin))
        low, high = cfg.scene.object_area
        area = cfg.margin ** -2
        scene = replace(cfg.scene, p_noise=0.0, p_jpeg=0.0, photometric=0.0, object_area=(low * area, high * area),
                        min_area=cfg.scene.min_area * area)
        top, left = (still_hw[0] - H) // 2, (still_hw[1] - W) // 2
        while True:
            still, labels, count = render_clip(rng, asset_bank(self.assets), scene, 1, still_hw, self.max_objects)
            areas = torch.bincount(labels[0, top: top + H, left: left + W].flatten(), minlength=count + 1)
            visible = [label for label in range(1, count + 1) if areas[label] >= cfg.scene.min_area * H * W]
            if visible:
                break
        relabel = torch.zeros(count + 1, dtype=torch.int64)
        relabel[visible] = torch.arange(1, len(visible) + 1)
        return still, relabel[labels], len(visible)

    def __getitem__(self, key: int | ClipKey) -> dict:
        """Item `key`; a still has no time, so a key's max_skip changes nothing."""
        rng = self.rng(self.unpack(key, 1)[0])
        H, W = self.size
        still, labels, count = self._still(rng)
        still_hw = tuple(still.shape[2:])
        top, left = (still_hw[0] - H) // 2, (still_hw[1] - W) // 2
        frames = torch.empty((self.num_frames, 3, H, W))
        masks = torch.empty((self.num_frames, H, W), dtype=torch.int64)
        frames[0] = still[0, :, top: top + H, left: left + W]
        masks[0] = labels[0, top: top + H, left: left + W]
        later = self.num_frames - 1
        if later:
            grid = _warp_grids(rng, self.config, later, self.size, still_hw)
            frames[1:] = F.grid_sample(still.expand(later, -1, -1, -1), grid, mode="bilinear", padding_mode="border",
                                       align_corners=False)
            masks[1:] = F.grid_sample(labels.float()[:, None].expand(later, -1, -1, -1), grid, mode="nearest",
                                      padding_mode="border", align_corners=False)[:, 0]
        photometric(rng, frames, self.config.scene)
        return {"frames": frames, "masks": masks, "num_objects": count}
