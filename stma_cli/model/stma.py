"""STMA: Spatial-Temporal Multi-level Association for video object segmentation.

The network is used in three steps, which the inference engine and the training loop both drive:

    features = model.encode(image)                        # once per frame
    entry = model.memorize(features, masks, ids)          # when a frame enters the memory
    logits = model.segment(features, [entry, ...], ids)   # background + n objects, stride 4

`forward` chains them for a single query frame against a few reference frames.

Shapes, in every module of the model:

    B  batch (clips, or one video at inference)     H, W  frame size, padded to a multiple of 16
    n  objects                                       h, w  the stride-16 grid: h = H / 16, w = W / 16
    k  tokens per object (config.tokens_per_object)  N     patches of one frame: h * w
    C  token width (config.dim)                      m     memory frames read by a frame
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from huggingface_hub import PyTorchModelHubMixin
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.profiler import record_function

from stma_cli.model.association import STMLBlock, sine_position_embedding
from stma_cli.model.decoder import Decoder, IDAssociation, label_map
from stma_cli.model.encoder import MobileNetEncoder, PatchEncoder
from stma_cli.model.presence import ObjectPresence, object_queries
from stma_cli.model.propagation import (LocalPropagation, MemoryMatching, connected_parts, encoder_keys, given_match,
                                        given_votes, part_counts, shot_continuity, shown_share, stray_parts,
                                        window_similarity)
from stma_cli.model.refinement import FineMemory, fine_keys, fine_labels, refine, thin_parts
from stma_cli.model.tokens import BACKGROUND_ID, IDEmbedding, ObjectTokenizer, visibility

ARCHITECTURE = "stma"
STRIDE = 16
LOGIT_STRIDE = 4
MIN_GIVEN_PATCHES = 4
"""`STMA.given_match` judges only objects that the frames where their masks were given show over this many patches
or more."""
MATCHING_KEYS = ("learned", "encoder")
"""Where matching keys come from: a learned projection of the stride-16 tokens, or the encoder's own
stride-8 and stride-16 features (ImageNet features when the encoder is kept frozen, as `stma train`
does for such models: what ImageNet knows about correspondence is kept, not unlearned)."""


@dataclass
class STMAConfig:
    """Sizes of an STMA network. `preset("tiny")` is the CPU default, `preset("base")` paper scale."""

    architecture: str = ARCHITECTURE
    encoder: str = "mobilenetv2"  # "mobilenetv2" or "vit"
    dim: int = 128  # token width of the association blocks
    depth: int = 2  # number of STML blocks (levels)
    heads: int = 4
    mlp_ratio: float = 2.0
    tokens_per_object: int = 4
    num_ids: int = 32  # size of the ID table: the most objects one forward pass can hold
    frame_self_attention: bool = False  # patch self-attention inside each block (ViT feature extraction)
    vit_dim: int = 768  # patch-embedding width ("vit" encoder only)
    decoder_widths: tuple[int, int, int] = (64, 48, 32)  # decoder channels at strides 16, 8, 4
    embed_dim: int = 32  # per-pixel embedding matched against ID embeddings
    # Width of the learned keys that the local prior and the memory matching share (matching_keys "learned");
    # called propagation_dim before.
    learned_key_dim: int = 64
    propagation_radius: int = 4  # the local prior's search window: (2r+1)^2 stride-16 patches
    matching_keys: str = "learned"  # keys of the local prior and memory matching: "learned" or "encoder"
    matching_top_k: int = 0  # memory matching reads each patch's k best matches (0: all, softmax over every patch)
    cut_threshold: float = 0.0  # below this match with the previous frame, a frame starts a new shot (0: never)
    # At inference, across a cut, an object goes on only if the new shot shows again at least cut_share of its
    # previous area: patches that match its patches in memory at cosine cut_match or more (0: every object goes on).
    cut_match: float = 0.0
    cut_share: float = 0.15
    # At inference, an object is taken as gone when, on given_frames frames in a row, under given_match of its mask's
    # patches have their best match, among the patches of the frames where its mask was given, on its own
    # (`STMA.given_match`; 0: never). It gets no mask until a frame's mask of it matches it again. Objects with
    # look-alikes on those frames (their patches match patches apart from them at mean best cosine given_alike or
    # more) are never judged. With given_area, a mask of at least given_area times the object's area on the frame
    # where its mask was last given is not judged either (0: masks of any size are): what is left where an object
    # was, or on what hid it, is a remnant of it, while a mask as large as the object is the object seen anew
    # (closer, turned, grown) more often than not.
    given_match: float = 0.0
    given_frames: int = 3
    given_alike: float = 0.62
    given_area: float = 0.0
    # At inference, a part of an object's mask apart from its largest part (not 8-connected to it on the stride-16
    # grid) goes to the background when under part_match of its patches have their best match, on the frames where
    # the object's mask was given, among its own patches (`STMA.stray_parts`; 0: never). Such a part is left where
    # the object was, or lies on background that looks like what surrounded it. The same objects as for given_match
    # are judged.
    part_match: float = 0.0
    # At inference, an object that had a mask within the last window_frames frames is searched for only within a
    # window around that mask, so that its id does not jump to a look-alike elsewhere in the frame: the mask's box,
    # widened on each side by the object's size (the square root of its recent masks' largest area) times
    # window_margin plus window_growth for each frame since (`Segmenter`; 0: no window). After window_frames frames
    # without a mask of it, or across a cut, the whole frame is searched again.
    window_frames: int = 0
    window_margin: float = 1.0
    window_growth: float = 1.0
    # At inference, an object whose whole mask on a frame is under speck_share of the largest area its masks have had
    # since its mask was last given gets no mask on that frame: such specks are left where the object was, or lie on
    # a look-alike, while the object itself is hidden or gone (`Segmenter`; 0: never).
    speck_share: float = 0.0
    readout_all: bool = False  # the memory readout informs every object, not only those the previous frame lacks
    # At inference, label propagation from the given masks on the encoder's stride-8 features (within refine_radius
    # cells) adds pixels to an object within refine_band cells of its mask (`stma_cli.model.refinement`; 0: never).
    refine_radius: int = 0
    refine_band: int = 1
    # At inference, the labels written at the input size follow the frame's colour edges near objects' borders: a
    # colour-weighted average of the bilinear probabilities over edge_radius pixels (`stma_cli.inference.edges`; 0:
    # bilinear only).
    edge_radius: int = 0

    PRESETS = ("tiny", "base")
    MAXIMA = {"dim": 4096, "depth": 64, "heads": 64, "mlp_ratio": 16.0, "tokens_per_object": 64, "num_ids": 1024,
              "vit_dim": 4096, "decoder_widths": 4096, "embed_dim": 4096, "learned_key_dim": 4096,
              "propagation_radius": 32, "matching_top_k": 4096, "refine_radius": 64, "refine_band": 64,
              "edge_radius": 32, "given_frames": 1000, "given_area": 100.0, "window_margin": 100.0,
              "window_growth": 100.0, "window_frames": 1000}
    """The largest value of each size, many times the presets': a hand-edited or hostile config.json cannot
    ask for an absurd network (and `stma_cli.hub` checks the sizes against the weights file before building)."""
    INFERENCE_ONLY = ("cut_match", "cut_share", "refine_radius", "refine_band", "given_match", "given_frames",
                      "given_alike", "given_area", "part_match", "window_margin", "window_growth", "window_frames",
                      "speck_share", "edge_radius")
    """Settings of rules that apply at inference only: training computes the same with any value, so a run
    resumes across a change in them."""
    RENAMED = {"propagation_dim": "learned_key_dim"}
    """Keys of older config.json files and their names now; `from_dict` reads both."""

    def __post_init__(self) -> None:
        self.decoder_widths = tuple(self.decoder_widths)  # JSON gives lists
        if self.architecture != ARCHITECTURE:
            raise ValueError(f"config is for architecture {self.architecture!r}, not {ARCHITECTURE!r}")
        if self.encoder not in ("mobilenetv2", "vit"):
            raise ValueError(f"unknown encoder {self.encoder!r} (mobilenetv2 or vit)")
        if self.matching_keys not in MATCHING_KEYS:
            raise ValueError(f"unknown matching_keys {self.matching_keys!r} ({' or '.join(MATCHING_KEYS)})")
        self._check_values()
        if self.refine_radius and self.matching_keys != "encoder":
            raise ValueError("refine_radius needs matching_keys \"encoder\" (it matches the encoder's own features)")

    def _check_values(self) -> None:
        """Types and ranges (`MAXIMA`), so that a hand-edited config.json fails here, naming its key."""
        for item in fields(self):
            value, default, most = getattr(self, item.name), item.default, self.MAXIMA.get(item.name)
            if isinstance(default, bool):
                ok, expected = isinstance(value, bool), "true or false"
            elif isinstance(default, int):
                zero_allowed = ("propagation_radius", "matching_top_k", "refine_radius", "window_frames", "edge_radius")
                least = 0 if item.name in zero_allowed else 1
                ok, expected = isinstance(value, int) and not isinstance(value, bool) and least <= value <= most, \
                    f"an integer from {least} to {most}"
            elif item.name in ("cut_threshold", "cut_match", "cut_share", "given_match", "given_alike",
                               "part_match", "speck_share"):
                ok, expected = isinstance(value, (int, float)) and not isinstance(value, bool) and \
                    0 <= value < 1, "a number from 0 to below 1"
            elif item.name in ("window_margin", "window_growth", "given_area"):
                ok, expected = isinstance(value, (int, float)) and not isinstance(value, bool) and \
                    math.isfinite(value) and 0 <= value <= most, f"a number from 0 to {most:g}"
            elif isinstance(default, float):
                ok, expected = isinstance(value, (int, float)) and not isinstance(value, bool) and \
                    math.isfinite(value) and 0 < value <= most, f"a number > 0 and at most {most:g}"
            elif isinstance(default, tuple):
                ok, expected = len(value) == len(default) and all(
                    isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= most for v in value), \
                    f"{len(default)} integers from 1 to {most}"
            else:
                ok, expected = isinstance(value, str), "a string"
            if not ok:
                raise ValueError(f"{item.name} is {value!r}, expected {expected}")
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} is not divisible by heads {self.heads}")

    @classmethod
    def preset(cls, name: str) -> "STMAConfig":
        """A named configuration: `tiny` or `base`."""
        if name == "tiny":
            return cls(matching_keys="encoder", matching_top_k=10, cut_threshold=0.7, cut_match=0.8, readout_all=True)
        if name == "base":
            return cls(encoder="vit", dim=768, depth=12, heads=12, mlp_ratio=4.0, tokens_per_object=8,
                       num_ids=64, frame_self_attention=True, vit_dim=768,
                       decoder_widths=(256, 128, 64), embed_dim=64)
        raise ValueError(f"unknown preset {name!r} (choose from {', '.join(cls.PRESETS)})")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self)
        data["decoder_widths"] = list(self.decoder_widths)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "STMAConfig":
        """Build from a dict; unknown keys are an error rather than silently dropped. Keys of older
        versions (`RENAMED`) are taken under their new names."""
        data = {cls.RENAMED.get(key, key): value for key, value in data.items()}
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass
class FrameFeatures:
    """Encoder output for one batch of frames, padded to a multiple of the stride."""

    f4: torch.Tensor  # (B, c4, H/4, W/4) encoder features at stride 4
    f8: torch.Tensor  # (B, c8, H/8, W/8) encoder features at stride 8
    tokens: torch.Tensor  # (B, N, C) stride-16 tokens
    keys: torch.Tensor  # (B, d, h, w) unit-length matching keys, used when segmenting and memorizing
    grid: tuple[int, int]  # (h, w) of the token grid
    size: tuple[int, int]  # (H, W) of the input before padding
    fine_keys: torch.Tensor | None = field(default=None, repr=False)  # (B, C, H/8, W/8): `STMA.fine_keys` keeps them

    def chunk(self, parts: int) -> list["FrameFeatures"]:
        """Split along the batch into `parts` equal batches (e.g. the frames of a clip)."""
        pieces = zip(self.f4.chunk(parts), self.f8.chunk(parts), self.tokens.chunk(parts), self.keys.chunk(parts))
        return [FrameFeatures(f4, f8, tokens, keys, self.grid, self.size) for f4, f8, tokens, keys in pieces]


@dataclass
class MemoryEntry:
    """What one memory frame contributes, its objects keyed by their ID-table entries (`object_ids`).

    Per level its reference tokens and object tokens (for the association), and its matching keys
    and background + object coverage on the token grid (for local propagation when it is the
    previous frame). Readers ask for objects by ID-table entry (`coverage_of`, `last_objects_of`,
    `visibility_of`): an object the entry does not hold (one added on a later frame) reads as absent.
    """

    levels: list[tuple[torch.Tensor, torch.Tensor]]  # per block: reference tokens (B, N, C), object tokens (B, n*k, C)
    keys: torch.Tensor  # (B, d, h, w) matching keys
    coverage: torch.Tensor  # (B, 1+n, h, w) background + object share of each patch
    object_ids: torch.Tensor  # (B, n) ID-table entries of the objects held, in the order of their tokens
    object_valid: torch.Tensor | None = None  # (B, n*k) bool, for padded training batches
    pos: torch.Tensor | None = None  # (1, N, C) positions of the reference tokens; None: the frame's own grid
    fine: FineMemory | None = None  # stride-4 labels (background + held objects), keys if given, for `refine`
    given: torch.Tensor | None = None  # (B, held) bool: objects whose masks were given, not predicted (`given_match`)
    projected: list[tuple[torch.Tensor, ...]] | None = field(default=None, repr=False)
    """Per level, the keys and values that test frames read (`STMA._projected`): made on the first read."""

    @property
    def held(self) -> int:
        """How many objects the entry holds: those of the frame it was made from."""
        return self.object_ids.shape[1]

    def coverage_of(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Background + coverage of the objects `ids` (B, n): (B, 1+n, h, w), zero for those it does not hold."""
        objects = self._gather(self.coverage[:, 1:].to(dtype), ids)
        return torch.cat([self.coverage[:, :1].to(dtype), objects], dim=1)

    def fine_of(self, ids: torch.Tensor) -> FineMemory:
        """`fine` with the labels (and thin parts) of background + the objects `ids` (B, n), zero for those it
        does not hold."""
        def of(labels: torch.Tensor | None) -> torch.Tensor | None:
            return None if labels is None else torch.cat([labels[:, :1], self._gather(labels[:, 1:], ids)], dim=1)

        return FineMemory(of(self.fine.labels), self.fine.keys, of(self.fine.parts))

    def given_of(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, n) bool: whether the mask of each object of `ids` (B, n) was given on the entry's frame."""
        if self.given is None:
            return torch.zeros(ids.shape, dtype=torch.bool, device=ids.device)
        return self._gather(self.given.float(), ids) > 0

    def last_objects_of(self, ids: torch.Tensor, tokens_per_object: int) -> torch.Tensor:
        """The last level's object tokens of `ids` (B, n): (B, n*k, C), zero for objects it does not hold."""
        tokens = self.levels[-1][1].unflatten(1, (self.held, tokens_per_object))
        return self._gather(tokens, ids).flatten(1, 2)

    def visibility_of(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """How visible each object of `ids` (B, n) is on the entry's frame (B, n); zero for those it does not hold."""
        return self._gather(visibility(self.coverage[:, 1:].flatten(2)), ids).to(dtype)

    def drop_objects(self, ids: list[int]) -> None:
        """Take the objects with these ID-table entries out, in place (inference: one video, batch 1).

        Their object tokens go from every level; their coverage joins the background's, since what they
        covered is background for the objects that remain. Objects the entry does not hold are ignored.
        """
        if self.object_ids.shape[0] != 1:
            raise ValueError("drop_objects works on a memory entry of one video (batch 1)")
        held = self.object_ids[0].tolist()
        keep = [p for p, i in enumerate(held) if i not in ids]
        gone = [p + 1 for p, i in enumerate(held) if i in ids]
        if not gone:
            return
        k = self.levels[0][1].shape[1] // self.held
        tokens = torch.tensor([p * k + t for p in keep for t in range(k)], dtype=torch.long,
                              device=self.coverage.device)
        self.levels = [(reference, objects[:, tokens]) for reference, objects in self.levels]
        self.projected = None
        self.coverage = _drop_channels(self.coverage, keep, gone)
        if self.fine is not None:
            parts = None if self.fine.parts is None else _drop_channels(self.fine.parts, keep, gone)
            self.fine = FineMemory(_drop_channels(self.fine.labels, keep, gone), self.fine.keys, parts)
        self.object_ids = self.object_ids[:, keep]
        if self.given is not None:
            self.given = self.given[:, keep]
        if self.object_valid is not None:
            self.object_valid = self.object_valid[:, tokens]

    def _gather(self, values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """Per row, the slices of `values` (B, held, ...) of the objects `ids` (B, n), in that order; zeros
        for ids the entry does not hold."""
        match = F.pad(ids[:, :, None] == self.object_ids[:, None, :], (0, 1), value=True)  # (B, n, held+1)
        index = match.int().argmax(2)  # the first match; `held`, the zero slice, for ids it does not hold
        padded = F.pad(values, (0, 0) * (values.dim() - 2) + (0, 1))
        index = index.view(*index.shape, *([1] * (values.dim() - 2))).expand(-1, -1, *values.shape[2:])
        return padded.gather(1, index)

    def pooled(self) -> "MemoryEntry":
        """This entry with its reference tokens (and their positions), keys and coverage averaged over 2x2
        patches: a quarter of the tokens to attend to and to match. Its object tokens stay as they are."""
        h, w = self.keys.shape[-2:]
        reference = self.levels[0][0]
        pos = sine_position_embedding(h, w, reference.shape[-1], reference.device)[None].to(reference.dtype)

        def pool(tokens: torch.Tensor) -> torch.Tensor:  # (B, h*w, C) -> (B, h'*w', C)
            grid = tokens.transpose(1, 2).unflatten(2, (h, w))
            return F.avg_pool2d(grid, 2, ceil_mode=True).flatten(2).transpose(1, 2)

        levels = [(pool(reference), objects) for reference, objects in self.levels]
        keys = F.normalize(F.avg_pool2d(self.keys, 2, ceil_mode=True), dim=1)
        coverage = F.avg_pool2d(self.coverage, 2, ceil_mode=True)
        return MemoryEntry(levels, keys, coverage, self.object_ids, self.object_valid, pool(pos), given=self.given)


def _drop_channels(coverage: torch.Tensor, keep: list[int], gone: list[int]) -> torch.Tensor:
    """Background + object shares (B, 1+held, ...) without the objects at channels `gone`, which join the
    background; `keep`: positions (from 0) of the objects that stay."""
    background = coverage[:, :1] + coverage[:, gone].sum(1, keepdim=True)
    return torch.cat([background, coverage[:, [p + 1 for p in keep]]], dim=1)


class _Unfilled(TorchFunctionMode):
    """Skips torch.nn.init's in-place initialisers (`normal_`, `kaiming_uniform_`, ...): modules built under it
    keep their parameters as allocated, never written, and untouched pages take no memory. (The meta device
    would do as much, but its first random or arithmetic op imports torch's compiler: seconds at each start.)"""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if getattr(func, "__module__", None) == "torch.nn.init" and func.__name__.endswith("_"):
            return args[0] if args else kwargs["tensor"]
        return func(*args, **(kwargs or {}))


@dataclass
class ObjectPlaces:
    """Where each object may be in the current frame, at stride 16 (`STMA._locate`)."""

    prior: torch.Tensor  # (B, 1+n, h, w): carried from the previous frame by local matching
    gate: torch.Tensor  # (B, 1+n): how far the prior holds (background 1; 0 across a cut)
    readout: torch.Tensor  # (B, 1+n, h, w): read from every memory frame by global matching
    reading: torch.Tensor  # (B, n): how much the readout informs each object
    left: torch.Tensor | None = None  # (B, n) bool: objects that a cut leaves behind (no mask on this frame)


class STMA(
    nn.Module,
    PyTorchModelHubMixin,
    library_name="stma",
    tags=["video-object-segmentation", "stma"],
    license="mit",
):
    """The STMA network: encoder, object tokens, STML blocks and prediction module."""

    def __init__(self, config: STMAConfig) -> None:
        super().__init__()
        if isinstance(config, dict):
            config = STMAConfig.from_dict(config)
        self.config = config
        if config.encoder == "mobilenetv2":
            self.encoder: nn.Module = MobileNetEncoder()
        else:
            self.encoder = PatchEncoder(config.vit_dim)
        c4, c8, c16 = self.encoder.channels
        self.project = nn.Conv2d(c16, config.dim, 1)
        self.ids = IDEmbedding(config.num_ids, config.dim)
        self.tokenizer = ObjectTokenizer(config.dim, config.tokens_per_object)
        self.blocks = nn.ModuleList(
            STMLBlock(config.dim, config.heads, config.mlp_ratio, config.frame_self_attention)
            for _ in range(config.depth)
        )
        learned_keys = config.matching_keys == "learned"
        self.propagation = LocalPropagation(config.dim, config.learned_key_dim if learned_keys else None,
                                            config.propagation_radius)
        self.matching = MemoryMatching(config.matching_top_k)
        self.decoder = Decoder(config.dim * config.depth, (c4, c8), config.decoder_widths, config.embed_dim,
                               prior_channels=config.dim)
        self.association = IDAssociation(config.dim, config.embed_dim)
        self.presence = ObjectPresence(config.dim, config.heads, config.mlp_ratio)

    # -- the three steps: encode, memorize, segment ----------------------------------------------

    def encode(self, image: torch.Tensor) -> FrameFeatures:
        """Encode images (B, 3, H, W) in [0, 1]; any H, W (padded to a multiple of 16)."""
        size = (image.shape[-2], image.shape[-1])
        pad_h, pad_w = (-size[0]) % STRIDE, (-size[1]) % STRIDE
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h), mode="replicate")
        f4, f8, f16 = self.encoder(image)
        tokens = self.project(f16)
        grid = (tokens.shape[-2], tokens.shape[-1])
        tokens = tokens.flatten(2).transpose(1, 2)
        if self.config.matching_keys == "encoder":
            keys = encoder_keys(f8, f16)
        else:
            keys = self.propagation.keys(tokens, grid)
        return FrameFeatures(f4, f8, tokens, keys, grid, size)

    def memorize(
        self, features: FrameFeatures, masks: torch.Tensor, ids: torch.Tensor, valid: torch.Tensor | None = None,
        given: torch.Tensor | None = None,
    ) -> MemoryEntry:
        """Turn a frame and its object masks (B, n, H, W) in [0, 1] into a memory entry.

        `ids` (B, n) are the objects' ID-table indices (1..num_ids); `valid` (B, n) marks real
        objects when a batch is padded to a common object count. `given` (B, n) bool: the objects whose masks
        were given, not predicted (`given_match` reads those); with `refine_radius`, at inference, an entry with
        a given mask keeps the keys that `refine` matches.
        """
        masks = self._pad_masks(masks, features)
        fine = None
        if self.config.refine_radius and not self.training:  # for `refine`, a rule of inference
            fine = FineMemory(fine_labels(masks))
            if given is not None and bool(given.any()):
                fine.keys, fine.parts = self.fine_keys(features), thin_parts(fine.labels)
        masks = self._pool_masks(masks, features)
        reference = features.tokens + self.ids.id_map(masks, ids)
        objects = self.tokenizer(features.tokens, masks, self.ids(ids))
        object_valid = None if valid is None else valid.repeat_interleave(self.config.tokens_per_object, dim=1)
        pos = self._position(features)
        levels = []
        for block in self.blocks:
            reference, objects = block.memorize(reference, objects, pos, features.grid, object_valid)
            levels.append((reference, objects))
        background = (1 - masks.sum(1, keepdim=True)).clamp(min=0)
        coverage = torch.cat([background, masks], dim=1).unflatten(2, features.grid)
        return MemoryEntry(levels, features.keys, coverage, ids, object_valid, fine=fine, given=given)

    def segment(
        self,
        features: FrameFeatures,
        memory: Sequence[MemoryEntry],
        ids: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits (B, 1+n, H/4, W/4) of background + n objects for a frame, read from memory.

        `memory` ends with the previous frame, whose masks are propagated locally. The logits are at
        stride 4 of the padded frame: `upsample_logits` maps them to (H, W).
        """
        return self.predict(features, memory, ids, valid)[0]

    def predict(
        self,
        features: FrameFeatures,
        memory: Sequence[MemoryEntry],
        ids: torch.Tensor,
        valid: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`segment`'s logits and the objects' presence logits (B, n), which training supervises.

        Four stages: `_associate`, the paper's three attentions (the frame's tokens read the memory's
        reference and object tokens, level by level); `_locate`, where each object is, which the paper
        does not have (the local prior from the previous frame, the memory readout, the gate between
        them, and at inference the objects a cut leaves behind); `_decode`, the decoder and the ID
        association with the two log-priors; and `_presence`, whether each object is in the frame at all.
        At inference, with `refine_radius`, `refine` then adds back thin parts from the given masks.
        """
        pos = self._position(features)
        test, x16 = self._associate(features, memory, pos)
        with record_function("stma.propagation"):
            places = self._locate(features, memory, ids)
        with record_function("stma.decoder"):
            logits = self._decode(features, x16, places, ids)
            presence = self._presence(test, pos, memory, ids)
            logits = torch.cat([logits[:, :1], logits[:, 1:] + F.logsigmoid(presence)[:, :, None, None]], dim=1)
            if places.left is not None:
                logits = logits.masked_fill(F.pad(places.left, (1, 0))[:, :, None, None], -1e4)
        given = [entry.fine_of(ids) for entry in memory if entry.fine is not None and entry.fine.parts is not None]
        if given and not self.training:  # a rule of inference, not learned (memorize keeps `fine` only with it)
            with record_function("stma.refine"):
                previous = memory[-1].fine_of(ids).labels if memory[-1].fine is not None else None
                logits = refine(logits, self.fine_keys(features), given, previous, self.config.refine_radius,
                                self.config.refine_band)
        if valid is not None:
            keep = torch.cat([torch.ones_like(valid[:, :1]), valid], dim=1)[:, :, None, None]
            logits = logits.masked_fill(~keep, -1e4)
        return logits, presence

    def given_match(self, features: FrameFeatures, memory: Sequence[MemoryEntry], ids: torch.Tensor,
                    logits: torch.Tensor) -> torch.Tensor:
        """How much of each object's mask on this frame the frames where its mask was given vouch for, (B, n): the
        share of its patches (`logits` (B, 1+n, H/4, W/4) argmax, over half a patch) whose best-matching patch
        there is the object's own. NaN where it has no patch, where those frames hold under `MIN_GIVEN_PATCHES` of
        its patches (a few patches tell little), or where they show look-alikes of it (`config.given_alike`).

        A mask left on what an object was hidden by, or on where it stood before it left, matches background or
        another object there; the object itself, seen anew or turned, still matches mostly its own patches.
        `Segmenter` drops an object whose share stays under `config.given_match` for `config.given_frames` frames.
        """
        given = [entry for entry in memory if entry.given is not None]
        if not given:
            return torch.full(ids.shape, torch.nan, device=ids.device)
        patches = self._patch_shares(logits, ids.shape[1]).flatten(2) > 0.5  # (B, n, N)
        return given_match(features.keys, *self._given_memory(given, ids), patches, MIN_GIVEN_PATCHES,
                           self.config.given_alike)

    def stray_parts(self, features: FrameFeatures, memory: Sequence[MemoryEntry], ids: torch.Tensor,
                    logits: torch.Tensor) -> torch.Tensor:
        """The parts of each object's mask that the frames where its mask was given do not vouch for, (B, n, h, w)
        bool on the stride-16 grid: the parts apart from its largest one (over the patches it has any share of,
        from `logits` (B, 1+n, H/4, W/4)) where under `config.part_match` of the patches match best its own there.
        Objects are judged as by `given_match`; none without `config.part_match`."""
        given = [entry for entry in memory if entry.given is not None]
        numbers = connected_parts(self._patch_shares(logits, ids.shape[1]) > 0)  # (B, n, h, w)
        split = part_counts(numbers) > 1  # (B, n): only objects in two parts or more have a part to judge
        if not given or not self.config.part_match or not split.any():
            return torch.zeros(numbers.shape, dtype=torch.bool, device=numbers.device)
        patches = ((numbers > 0) & split[:, :, None, None]).flatten(2)
        votes = given_votes(features.keys, *self._given_memory(given, ids), patches, MIN_GIVEN_PATCHES,
                            self.config.given_alike)
        return stray_parts(numbers, votes, self.config.part_match)

    @staticmethod
    def _patch_shares(logits: torch.Tensor, n: int) -> torch.Tensor:
        """Each object's share of each stride-16 patch under the argmax of `logits`, (B, n, h, w)."""
        shown = F.one_hot(label_map(logits), n + 1).permute(0, 3, 1, 2)[:, 1:].float()  # (B, n, H/4, W/4)
        return F.avg_pool2d(shown, STRIDE // LOGIT_STRIDE)

    @staticmethod
    def _given_memory(given: Sequence[MemoryEntry], ids: torch.Tensor) -> tuple[list[torch.Tensor], ...]:
        """The keys, coverage and given objects of the memory entries whose masks were given, for `given_votes`."""
        return ([entry.keys for entry in given], [entry.coverage_of(ids, torch.float32) for entry in given],
                [entry.given_of(ids) for entry in given])

    def starts_shot(self, features: FrameFeatures, memory: Sequence[MemoryEntry]) -> torch.Tensor:
        """(B,) bool: whether the frame starts a new shot (a hard cut from the last memory frame), as `_locate`
        decides it under `config.cut_threshold` (never without one)."""
        if not self.config.cut_threshold:
            return torch.zeros(features.keys.shape[0], dtype=torch.bool, device=features.keys.device)
        return self._cut(window_similarity(features.keys, memory[-1].keys, self.config.propagation_radius))

    def _cut(self, similarity: torch.Tensor) -> torch.Tensor:
        """(B,) bool: whether frames whose window similarity to the previous frame is `similarity` start a new shot
        (`config.cut_threshold`)."""
        return shot_continuity(similarity) < self.config.cut_threshold

    def _associate(self, features: FrameFeatures, memory: Sequence[MemoryEntry],
                   pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The frame's tokens after each level has read the memory (the last level's (B, N, C), for the
        presence head) and all levels' outputs as one stride-16 map (B, levels*C, h, w), for the decoder."""
        batch = features.tokens.shape[0]
        memory_mask = self._memory_mask(features, memory)
        test, outputs = features.tokens, []
        with record_function("stma.association"):
            projected = [self._projected(entry, pos) for entry in memory]
            for level, block in enumerate(self.blocks):
                parts = [entry[level] for entry in projected]  # per frame: reference keys, values; object keys, values
                keys = torch.cat([part[0] for part in parts] + [part[2] for part in parts], dim=1)
                values = torch.cat([part[1] for part in parts] + [part[3] for part in parts], dim=1)
                test = block.read(test, pos, features.grid, keys, values, memory_mask)
                outputs.append(test)
        return test, torch.cat(outputs, dim=2).transpose(1, 2).reshape(batch, -1, *features.grid)

    def _locate(self, features: FrameFeatures, memory: Sequence[MemoryEntry], ids: torch.Tensor) -> ObjectPlaces:
        """Where each of the n objects may be, from the previous frame (local prior, gated by how much of the
        object that frame holds, and by whether this frame continues its shot) and from the whole memory
        (readout)."""
        coverages = [entry.coverage_of(ids, features.tokens.dtype) for entry in memory]
        memory_keys = [entry.keys for entry in memory]
        similarity = window_similarity(features.keys, memory[-1].keys, self.config.propagation_radius)
        prior = self.propagation(features.keys, memory[-1].keys, coverages[-1], similarity)
        gate = self.propagation.gate(coverages[-1])  # (B, 1+n): how much of each the previous frame holds
        left = None
        if self.config.cut_threshold:  # across a cut, the previous frame says nothing of where objects are
            cut = self._cut(similarity)
            gate = torch.cat([gate[:, :1], gate[:, 1:] * ~cut[:, None]], 1)
            if self.config.cut_match and not self.training and cut.any():  # a rule of inference, not learned
                left = cut[:, None] & self._left_behind(features, memory_keys, coverages)
        readout = self.matching(features.keys, memory_keys, coverages)
        # The readout informs the objects the previous frame lacks or (readout_all) every object, so that the
        # memory can restore what one frame lost.
        reading = torch.ones_like(gate[:, 1:]) if self.config.readout_all else 1 - gate[:, 1:]
        return ObjectPlaces(prior, gate, readout, reading, left)

    def _left_behind(self, features: FrameFeatures, memory_keys: list[torch.Tensor],
                     coverages: list[torch.Tensor]) -> torch.Tensor:
        """(B, n) bool: the objects of the previous frame that a frame starting a new shot shows too little of
        (`shown_share` under `cut_share`). The memory readout cannot say so: it gives every patch the labels
        of its best matches, however poor, so the first frame of an unrelated shot gets patches of the old
        objects, which its successors then carry on."""
        share = shown_share(features.keys, memory_keys, [c[:, 1:] for c in coverages], coverages[-1][:, 1:],
                            self.config.cut_match)
        return share < self.config.cut_share  # NaN (not in the previous frame): False, found from memory as ever

    def _decode(self, features: FrameFeatures, x16: torch.Tensor, places: ObjectPlaces,
                ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, 1+n, H/4, W/4): the decoder told each object's place (the local prior for the objects
        the previous frame holds, the memory readout for the others, blended by the gate; and the readout
        alone, as `places.reading` says), the ID association, and the two log-priors."""
        held, absent = places.gate[:, 1:], 1 - places.gate[:, 1:]
        prior_ids = self._id_map(held[..., None, None] * places.prior[:, 1:]
                                 + absent[..., None, None] * places.readout[:, 1:], ids)
        readout_ids = self._id_map(places.reading[..., None, None] * places.readout[:, 1:], ids, background=False)
        embedding = self.decoder(x16, features.f8, features.f4, prior_ids, readout_ids)
        background = torch.full_like(ids[:, :1], BACKGROUND_ID)
        logits = self.association(embedding, self.ids(torch.cat([background, ids], dim=1)))
        scale = STRIDE // LOGIT_STRIDE
        return (logits + self.propagation.log_prior(places.prior, places.gate, scale)
                + self.matching.log_prior(places.readout, places.reading, scale))

    def forward(
        self, image: torch.Tensor, ref_images: torch.Tensor, ref_masks: torch.Tensor, ids: torch.Tensor
    ) -> torch.Tensor:
        """Logits (B, 1+n, H, W) for `image` (B, 3, H, W) given m reference frames.

        ref_images (B, m, 3, H, W), ref_masks (B, m, n, H, W) in [0, 1], ids (B, n).
        """
        memory = [
            self.memorize(self.encode(ref_images[:, i]), ref_masks[:, i], ids) for i in range(ref_images.shape[1])
        ]
        features = self.encode(image)
        return upsample_logits(self.segment(features, memory, ids), features.size)

    def for_inference(self, in_place: bool = False) -> "STMA":
        """A model for fast inference (same outputs up to rounding; not for training or saving).

        The MobileNetV2 encoder gets its BatchNorm folded into the convolutions and a channels-last
        memory layout, which oneDNN runs much faster on CPU. By default this is done on a copy; with
        `in_place`, on this model, which then holds only one copy of the weights in memory.
        """
        model = (self if in_place else copy.deepcopy(self)).eval()
        if isinstance(model.encoder, MobileNetEncoder):
            model.encoder.fold_batchnorm()
            model.encoder.to(memory_format=torch.channels_last)
        return model

    # -- helpers ---------------------------------------------------------------------------------

    def _id_map(self, maps: torch.Tensor, ids: torch.Tensor, background: bool = True) -> torch.Tensor:
        """ID map (B, C, h, w) of per-object maps (B, n, h, w), with the background's share or without it."""
        b, _, h, w = maps.shape
        id_map = self.ids.id_map if background else self.ids.object_map
        return id_map(maps.flatten(2), ids).transpose(1, 2).reshape(b, -1, h, w)

    def _projected(self, entry: MemoryEntry, pos: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        """The entry's keys and values for each level's test side, projected on its first read and kept
        (a memory frame is read by many frames: with them cached, a frame projects only what is new)."""
        if entry.projected is None:
            reference_pos = pos if entry.pos is None else entry.pos
            entry.projected = [block.correlation.project_frame(reference, objects, reference_pos)
                               for block, (reference, objects) in zip(self.blocks, entry.levels)]
        return entry.projected

    def _presence(self, test: torch.Tensor, pos: torch.Tensor, memory: Sequence[MemoryEntry],
                  ids: torch.Tensor) -> torch.Tensor:
        """Presence logits (B, n): each object's memory summary against the frame's last-level tokens."""
        k = self.config.tokens_per_object
        objects = [entry.last_objects_of(ids, k) for entry in memory]
        seen = [entry.visibility_of(ids, test.dtype) for entry in memory]
        return self.presence(object_queries(objects, seen, k), test, pos)

    def _position(self, features: FrameFeatures) -> torch.Tensor:
        h, w = features.grid
        return sine_position_embedding(h, w, self.config.dim, features.tokens.device)[None].to(features.tokens.dtype)

    def fine_keys(self, features: FrameFeatures) -> torch.Tensor:
        """The frame's stride-8 keys for `refine` (B, C, H/8, W/8), made once per frame."""
        if features.fine_keys is None:
            features.fine_keys = fine_keys(features.f8, features.keys)
        return features.fine_keys

    @staticmethod
    def _pad_masks(masks: torch.Tensor, features: FrameFeatures) -> torch.Tensor:
        """Masks (B, n, H, W) padded with zeros to the padded frame's size."""
        h, w = features.grid
        pad_h, pad_w = h * STRIDE - masks.shape[-2], w * STRIDE - masks.shape[-1]
        return F.pad(masks.to(features.tokens.dtype), (0, pad_w, 0, pad_h))

    @staticmethod
    def _pool_masks(masks: torch.Tensor, features: FrameFeatures) -> torch.Tensor:
        """Object coverage of each token, (B, n, N), from masks (B, n, H, W) padded to the padded frame's size."""
        b, n = masks.shape[:2]
        h, w = features.grid
        return F.avg_pool2d(masks.flatten(0, 1)[:, None], STRIDE).view(b, n, h * w)

    @staticmethod
    def _memory_mask(features: FrameFeatures, memory: Sequence[MemoryEntry]) -> torch.Tensor | None:
        if all(entry.object_valid is None for entry in memory):
            return None
        batch = features.tokens.shape[0]
        device = features.tokens.device
        n_tokens = sum(entry.levels[0][0].shape[1] for entry in memory)
        parts = [torch.ones(batch, n_tokens, dtype=torch.bool, device=device)]
        for entry in memory:
            if entry.object_valid is None:
                parts.append(torch.ones(batch, entry.levels[0][1].shape[1], dtype=torch.bool, device=device))
            else:
                parts.append(entry.object_valid)
        return torch.cat(parts, dim=1)

    # -- Hub serialisation: safetensors only, loaded strictly ------------------------------------

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, *, revision: str | None = None,
                        map_location: str = "cpu", **hub_options: Any) -> "STMA":
        """Weights from a folder (config.json + model.safetensors) or a Hub repo id, loaded strictly by
        `stma_cli.hub.load_weights_folder`, the loader of every command.

        The Hub mixin's own reading of config.json is bypassed: that loader checks the config against the
        weights file before building the model. `hub_options` (cache_dir, force_download, token,
        local_files_only) go to `huggingface_hub.hf_hub_download`.
        """
        from huggingface_hub import hf_hub_download

        from stma_cli.hub import CONFIG_FILE, WEIGHTS_FILE, load_weights_folder

        folder = Path(pretrained_model_name_or_path)
        if not folder.is_dir():
            repo_id = str(pretrained_model_name_or_path)
            config = Path(hf_hub_download(repo_id, CONFIG_FILE, revision=revision, **hub_options))
            folder = config.parent  # the cache keeps a commit's files under snapshots/<commit>/
            hf_hub_download(repo_id, WEIGHTS_FILE, revision=folder.name, **hub_options)
        return load_weights_folder(folder, map_location)

    @classmethod
    def tensor_shapes(cls, config: STMAConfig) -> dict[str, tuple[int, ...]]:
        """The shape of each tensor in the state dict of `config`'s model, without taking its memory (see
        `_Unfilled`): what `stma_cli.hub` checks a weights file against before it builds the model."""
        with _Unfilled():
            model = cls(config)
        return {key: tuple(value.shape) for key, value in model.state_dict().items()}

    def num_parameters(self) -> int:
        """Number of parameters."""
        return sum(p.numel() for p in self.parameters())


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Stride-4 logits of a padded frame -> logits at the frame's (H, W)."""
    h, w = logits.shape[-2] * LOGIT_STRIDE, logits.shape[-1] * LOGIT_STRIDE
    full = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return full[..., : size[0], : size[1]]

