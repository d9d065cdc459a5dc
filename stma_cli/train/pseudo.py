"""Pseudo-videos: one still image with object masks, warped by a random affine + elastic map per frame.

This is the static-image pre-training of STM-style models: the still is a synthetic composite (real-photo
cut-outs and textured shapes pasted on a real photo or video frame), frame 0 is the still itself and every
later frame is an independent random warp of it, applied to image and masks together, so that the model
learns to match an object across large appearance changes before it sees smooth motion.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from stma_cli.train.assets import asset_bank, split_assets
from stma_cli.train.geometry import affine_grid, affine_theta, rotate_scale, translate
from stma_cli.train.synthetic import TRAIN_CONFIG, SyntheticConfig, check_clip_args, photometric, render_clip


@dataclass(frozen=True)
class PseudoConfig:
    """Strength of the per-frame warps, and the settings of the still image."""

    max_rotation: float = 15.0
    """Degrees."""
    max_shear: float = 10.0
    """Degrees."""
    scale: tuple[float, float] = (0.9, 1.25)
    """Zoom factor range (above 1 zooms in, which exposes less of the mirrored border)."""
    max_translation: float = 0.08
    """Fraction of the frame size."""
    elastic: float = 0.015
    """Amplitude of the elastic displacement, fraction of the frame size."""
    scene: SyntheticConfig = replace(TRAIN_CONFIG, max_speed=0.0, max_rotation=0.0, max_zoom=0.0, camera_motion=0.0,
                                     p_occluder=0.0, p_motion_blur=0.0, p_scene_cut=0.0)
    """The still's composition; its photometric settings apply to the warped frames."""


def _warp(rng: np.random.Generator, cfg: PseudoConfig, size: tuple[int, int]) -> np.ndarray:
    """A random 3x3 map from output pixels to still pixels, around the frame centre."""
    H, W = size
    angle = math.radians(rng.uniform(-cfg.max_rotation, cfg.max_rotation))
    shear = math.tan(math.radians(rng.uniform(-cfg.max_shear, cfg.max_shear)))
    scale = math.exp(rng.uniform(*np.log(cfg.scale)))
    shift = rng.uniform(-cfg.max_translation, cfg.max_translation, 2) * (W, H)
    shear_map = np.array([[1.0, shear, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    forward = translate(W / 2 + shift[0], H / 2 + shift[1]) @ rotate_scale(angle, scale) @ shear_map @ translate(
        -W / 2, -H / 2)
    return np.linalg.inv(forward)


class PseudoVideos(Dataset):
    """Map-style dataset of pseudo-videos; item i of seed s is a pure function of (s, i).

    Items as SyntheticVideos: {"frames": (T, 3, H, W) float32 in [0, 1], "masks": (T, H, W) int64,
    "num_objects": n}; frame 0 is the unwarped still, where every object is visible.
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

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} clips")
        rng = np.random.default_rng([self.seed, index, self.STREAM])
        cfg = self.config
        still_cfg = replace(cfg.scene, p_noise=0.0, p_jpeg=0.0, photometric=0.0)
        still, labels, count = render_clip(rng, asset_bank(self.assets), still_cfg, 1, self.size, self.max_objects)
        frames = still.expand(self.num_frames, -1, -1, -1).clone()
        masks = labels.expand(self.num_frames, -1, -1).clone()
        later = self.num_frames - 1
        if later:
            H, W = self.size
            theta = np.stack([affine_theta(self.size, _warp(rng, cfg, self.size), self.size) for _ in range(later)])
            grid = affine_grid(theta, H, W)
            coarse = rng.normal(0.0, 2.0 * cfg.elastic, (later, 2, 5, 5)).astype(np.float32)
            elastic = F.interpolate(torch.from_numpy(coarse), size=(H, W), mode="bicubic", align_corners=True)
            grid.add_(elastic.permute(0, 2, 3, 1))
            frames[1:] = F.grid_sample(still.expand(later, -1, -1, -1), grid, mode="bilinear",
                                       padding_mode="reflection", align_corners=False)
            warped = F.grid_sample(labels.float()[:, None].expand(later, -1, -1, -1), grid, mode="nearest",
                                   padding_mode="reflection", align_corners=False)
            masks[1:] = warped[:, 0].long()
        photometric(rng, frames, cfg.scene)
        return {"frames": frames, "masks": masks, "num_objects": count}
