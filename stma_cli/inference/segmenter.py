"""Frame-by-frame inference with explicit state: `Segmenter.step(image, mask)`.

    segmenter = Segmenter(model)
    for index, frame in enumerate(frames):
        result = segmenter.step(frame, masks.get(index))   # mask: (H, W) object ids, or None
        result.labels                                       # (H, W) uint8 object ids

Objects may be introduced on any frame: a mask's ids that are new start being tracked there, and
ids already tracked are reset to the given mask. `remove(ids)` ends objects (e.g. at a scene cut).
Everything the next frame needs lives in the object (memory bank, object ids, their ID-table
entries), so a script drives it without the CLI; `reset()` starts a new video with the same model.

The stages of a step are labelled for `torch.profiler` ("stma.resize", "stma.encoder",
"stma.memorize", "stma.labels"; the model labels "stma.association", "stma.propagation", "stma.decoder"
and "stma.refine" inside `segment`), which is how benchmarks/segment_speed.py splits the time.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import InitVar, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch.profiler import record_function

from stma_cli.device import autocast, autocast_dtype
from stma_cli.errors import StmaError
from stma_cli.inference.config import SegmenterConfig
from stma_cli.inference.edges import edge_labels
from stma_cli.inference.memory import MemoryBank
from stma_cli.model import LOGIT_STRIDE, STMA, FrameFeatures, label_map, upsample_logits


@dataclass
class FrameResult:
    """One frame's prediction."""

    labels: np.ndarray  # (H, W) uint8 object ids at the input size
    logits: torch.Tensor  # (1+K, H', W') float32 at stride 4 of the processed size, on the CPU
    object_ids: list[int]  # the ids of logits channels 1..K
    presence: np.ndarray  # (K,) float32: how sure the model is that each object is in the frame (1 where given)


@dataclass(frozen=True)
class LastMask:
    """An object's last mask: the frame it was on, its box (top, left, bottom, right), and the object's size (the
    square root of the largest area of its recent masks, see `Segmenter._note_last_seen`), in cells of the
    stride-4 logit grid."""

    frame: int
    box: tuple[int, int, int, int]
    size: float

    def window(self, frame: int, margin: float, growth: float) -> tuple[float, float, float, float]:
        """The box widened on each side by `size` times `margin` plus `growth` per frame since this mask."""
        pad = self.size * (margin + growth * (frame - self.frame))
        top, left, bottom, right = self.box
        return top - pad, left - pad, bottom + pad, right + pad


@dataclass
class Segmenter:
    """Tracks objects through a stream of frames with a bounded memory.

    It runs `model.for_inference()`, a copy of the model tuned for inference made once, here, so the
    model passed in is left as it is (it may still be training). Make one Segmenter per process and
    `reset()` it between videos: every new Segmenter is a new copy of the model. With
    `copy_model=False` the model passed in is tuned in place instead, for a caller that hands it over.

    Each object holds an entry of the model's ID table while it is tracked; the table bounds how
    many objects are tracked at once (`model.config.num_ids`), not how many a video holds over time.
    """

    model: STMA
    config: SegmenterConfig = field(default_factory=SegmenterConfig)
    copy_model: InitVar[bool] = True
    object_ids: list[int] = field(default_factory=list)
    memory: MemoryBank = field(init=False)
    table: dict[int, int] = field(init=False)  # object id -> its ID-table entry (1..num_ids)
    released: list[int] = field(init=False)  # ID-table entries of removed objects, oldest first
    doubted: dict[int, int] = field(init=False)  # object id -> frames in a row its given masks did not vouch for it
    last_seen: dict[int, LastMask] = field(init=False)  # object id -> where and when it last had a mask
    largest: dict[int, int] = field(init=False)  # object id -> largest area of its masks since its mask was given
    given_area: dict[int, float] = field(init=False)  # object id -> stride-4 cells of its last given mask
    frame_index: int = field(init=False)  # frames stepped since `reset`

    def __post_init__(self, copy_model: bool) -> None:
        self.device = next(self.model.parameters()).device
        self.dtype = autocast_dtype(self.device, self.config.precision)
        self.model = self.model.for_inference(in_place=not copy_model)
        self.reset()

    def reset(self) -> None:
        """Forget all objects and memory (start a new video)."""
        self.object_ids = []
        self.table, self.released, self.doubted, self.last_seen, self.largest, self.given_area = {}, [], {}, {}, {}, {}
        self.frame_index = 0
        self.memory = MemoryBank(self.config.mem_size, self.config.mem_every, self.config.mem_full)

    def remove(self, object_ids: Iterable[int]) -> None:
        """Stop tracking these objects (ids not tracked are ignored), as Cutie's `delete_objects` does.

        Their object tokens and coverage leave every memory frame, so they are neither read nor
        counted against the ID table any more. Their ID-table entries become free; new objects take
        entries never used first, because the memory frames' patches still carry the old ones. An id
        may come back later in a mask: it is then a new object.
        """
        ending = set(object_ids)
        gone = [i for i in self.object_ids if i in ending]
        if not gone:
            return
        for entry in self.memory.entries():
            entry.drop_objects([self.table[i] for i in gone])
        for object_id in gone:
            self.object_ids.remove(object_id)
            self.released.append(self.table.pop(object_id))
            self.doubted.pop(object_id, None)
            self.last_seen.pop(object_id, None)
            self.largest.pop(object_id, None)
            self.given_area.pop(object_id, None)
        if not self.object_ids:
            self.reset()  # nothing left to follow: the next mask starts afresh

    @torch.inference_mode()
    def step(self, image: np.ndarray, mask: np.ndarray | None = None) -> FrameResult:
        """Segment one RGB frame (H, W, 3) uint8; `mask` (H, W) of object ids adds or resets objects."""
        height, width = image.shape[:2]
        if mask is not None and mask.shape != (height, width):
            raise StmaError(f"mask of size {mask.shape[1]}x{mask.shape[0]} does not match the frame size {width}x{height}")
        with record_function("stma.resize"):
            pixels = frame_pixels(image, self.device)
            x = self._prepare(pixels)
        with autocast(self.device, self.dtype):
            with record_function("stma.encoder"):
                features = self.model.encode(x)
            given = self._add_objects(mask) if mask is not None else []
            ids = self._table_ids()
            if self.memory.empty or not self.object_ids:
                logits = self._empty_logits(features.size)
                presence = torch.zeros(1, len(self.object_ids), device=self.device)
            else:
                logits, presence = self.model.predict(features, self.memory.entries(), ids)
                presence = F.pad(presence, (0, len(self.object_ids) - presence.shape[1])).sigmoid()
                logits, presence = self._drop_doubted(features, logits, presence, ids, given)
                logits = self._drop_stray_parts(features, logits, ids, given)
                if self.model.config.window_frames and bool(self.model.starts_shot(features, self.memory.entries())[0]):
                    self.last_seen = {}  # across a cut, where an object was says nothing of where it is
            if given:
                logits = self._impose(logits, mask, given, features.size)
                presence[:, [self.object_ids.index(i) for i in given]] = 1.0
            if self.object_ids:
                with record_function("stma.memorize"):
                    probs = upsample_logits(logits, features.size).softmax(1)
                    flags = torch.tensor([[i in given for i in self.object_ids]], device=self.device) if given else None
                    entry = self.model.memorize(features, probs[:, 1:], ids, given=flags)
                    self.memory.add(entry, annotated=bool(given))
            if self.model.config.window_frames or self.model.config.speck_share:
                # One label map for the rules on the masks written; each keeps it in step with the logits it changes.
                labels = label_map(logits)[0]
                logits, presence = self._keep_in_window(logits, presence, labels, given)
                h, w = valid_cells(features.size)
                logits, presence = self._drop_specks(logits, presence, labels[:h, :w], given)
                self._note_last_seen(labels[:h, :w], given)
        self.frame_index += 1
        with record_function("stma.labels"):
            result = frame_result(logits.float(), self.object_ids, features.size, (height, width), presence[0],
                                  pixels, self.model.config.edge_radius)
        if not torch.isfinite(result.logits).all():
            raise StmaError("the model's output is not finite (NaN or inf): its weights are broken")
        if given:
            keep_given_mask(result.labels, mask)
        return result

    # -- helpers ---------------------------------------------------------------------------------

    def _prepare(self, pixels: torch.Tensor) -> torch.Tensor:
        """The model's input (1, 3, h, w) in 0..1 at the processing size, from the frame's (H, W, 3) uint8 pixels."""
        x = pixels.permute(2, 0, 1)[None].float().div_(255)
        size = processing_size(pixels.shape[0], pixels.shape[1], self.config.max_side)
        if size != tuple(pixels.shape[:2]):
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        return x

    def _add_objects(self, mask: np.ndarray) -> list[int]:
        given = [int(i) for i in np.unique(mask) if i != 0]
        new = [i for i in given if i not in self.object_ids]
        if len(self.object_ids) + len(new) > self.model.config.num_ids:
            raise StmaError(f"{len(self.object_ids) + len(new)} objects at once, but the model's ID table holds at "
                            f"most {self.model.config.num_ids} (end objects with remove / --end to free entries)")
        for object_id in new:
            self.object_ids.append(object_id)
            self.table[object_id] = self._free_entry()
        return given

    def _free_entry(self) -> int:
        """An ID-table entry no tracked object holds: one never used if any, else the longest released."""
        held = set(self.table.values())
        never_used = [e for e in range(1, self.model.config.num_ids + 1) if e not in held and e not in self.released]
        if never_used:
            return never_used[0]
        entry = next(e for e in self.released if e not in held)
        self.released.remove(entry)
        return entry

    def _table_ids(self) -> torch.Tensor:
        """The objects' ID-table entries, (1, n) in the order of `object_ids`."""
        return torch.tensor([[self.table[i] for i in self.object_ids]], device=self.device)

    def _empty_logits(self, size: tuple[int, int]) -> torch.Tensor:
        h, w = (math.ceil(s / 16) * 16 // LOGIT_STRIDE for s in size)
        logits = torch.full((1, 1 + len(self.object_ids), h, w), -1e4, device=self.device)
        logits[:, 0] = 0
        return logits

    def _drop_doubted(self, features: FrameFeatures, logits: torch.Tensor, presence: torch.Tensor,
                      ids: torch.Tensor, given: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits and presence without the objects whose given masks have not vouched for their masks on
        `model.config.given_frames` frames in a row (`STMA.given_match` under `given_match`): such a mask lies on
        what hid the object, or where it was before it left. A frame without a mask of the object (or without
        enough of it to judge, or, with `given_area`, with a mask of at least that many times its given area)
        neither counts against it nor clears it; a frame that vouches for it clears it."""
        config = self.model.config
        if not config.given_match:
            return logits, presence
        share = self.model.given_match(features, self.memory.entries(), ids, logits)[0].tolist()
        areas = torch.bincount(label_map(logits)[0].flatten(), minlength=len(share) + 1)[1:].tolist()
        gone = []
        for channel, (object_id, value, area) in enumerate(zip(self.object_ids, share, areas), start=1):
            whole = config.given_area and area >= config.given_area * self.given_area.get(object_id, math.inf)
            if object_id in given:  # its mask is given on this frame
                self.doubted[object_id] = 0
            elif value == value and not whole:  # not NaN, nor as large as the object: there is something to judge
                self.doubted[object_id] = self.doubted.get(object_id, 0) + 1 if value < config.given_match else 0
            if self.doubted.get(object_id, 0) >= config.given_frames:
                gone.append(channel)
        if gone:
            logits = logits.clone()
            logits[:, gone] = -1e4
            presence = presence.clone()
            presence[:, [channel - 1 for channel in gone]] = 0.0
        return logits, presence

    def _drop_stray_parts(self, features: FrameFeatures, logits: torch.Tensor, ids: torch.Tensor,
                          given: list[int]) -> torch.Tensor:
        """The logits with the parts of objects' masks that the given frames do not vouch for (`STMA.stray_parts`
        under `model.config.part_match`) given to the background, at the object's own logit there
        (`give_to_background`). It runs before the memory takes the frame, so that the memory no longer takes such a
        part for the object alone; an object's largest part always stays."""
        if not self.model.config.part_match or not self.object_ids:
            return logits
        stray = self.model.stray_parts(features, self.memory.entries(), ids, logits)[0]  # (n, h, w)
        for channel, object_id in enumerate(self.object_ids, start=1):
            if object_id in given:
                stray[channel - 1] = False
        if not stray.any():
            return logits
        scale = logits.shape[-1] // stray.shape[-1]  # stride-4 cells per patch side
        cells = stray.repeat_interleave(scale, 1).repeat_interleave(scale, 2)  # (n, H/4, W/4)
        labels = label_map(logits)[0]
        logits = logits.clone()
        for channel in range(1, len(self.object_ids) + 1):
            if cells[channel - 1].any():
                give_to_background(logits, labels, channel, cells[channel - 1] & (labels == channel))
        return logits

    def _keep_in_window(self, logits: torch.Tensor, presence: torch.Tensor, labels: torch.Tensor,
                        given: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits with each object's channel at -1e4 outside its window (`model.config.window_frames`): an
        object that had a mask within the last window_frames frames is searched for only near that mask (see
        `LastMask.window`), so that its id does not jump to a look-alike across the frame. The part of its mask
        outside the window goes to the background, and an object left without a mask gets presence 0; `labels`
        (the logits' stride-4 labels) is updated to match. `step` calls it after the memory took the frame: it
        changes the masks written, not what the model remembers."""
        config = self.model.config
        if not config.window_frames:
            return logits, presence
        windows = {}
        for channel, object_id in enumerate(self.object_ids, start=1):
            last = self._window_of(object_id, given)
            if last is not None:
                windows[channel] = last.window(self.frame_index, config.window_margin, config.window_growth)
        if not windows:
            return logits, presence
        h, w = logits.shape[-2:]
        rows = torch.arange(h, device=logits.device)[:, None]
        cols = torch.arange(w, device=logits.device)[None, :]
        had = {channel: bool((labels == channel).any()) for channel in windows}
        logits = logits.clone()
        for channel, (top, left, bottom, right) in windows.items():
            outside = ~((rows >= top) & (rows <= bottom) & (cols >= left) & (cols <= right))
            lost = outside & (labels == channel)  # its mask outside the window goes to the background, not to others
            give_to_background(logits, labels, channel, lost)
            logits[0, channel].masked_fill_(outside, -1e4)
        emptied = [channel - 1 for channel in windows if had[channel] and not bool((labels == channel).any())]
        if emptied:
            presence = presence.clone()
            presence[:, emptied] = 0.0
        return logits, presence

    def _window_of(self, object_id: int, given: list[int]) -> LastMask | None:
        """The object's last mask while it still bounds where the object is searched for: within
        `model.config.window_frames` frames, and not on a frame where the object's mask is given."""
        last = self.last_seen.get(object_id)
        if object_id in given or last is None or self.frame_index - last.frame > self.model.config.window_frames:
            return None
        return last

    def _drop_specks(self, logits: torch.Tensor, presence: torch.Tensor, labels: torch.Tensor,
                     given: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits without the masks that are specks: an object whose whole mask is under
        `model.config.speck_share` of the largest area its masks have had since its mask was given gets no mask
        (its pixels go to the background, its presence is 0); `labels` (stride-4 labels of the valid area, a view
        of `step`'s) is updated to match. Like the window, it changes the masks written, not what the model
        remembers."""
        share = self.model.config.speck_share
        if not share:
            return logits, presence
        specks = []
        for channel, object_id in enumerate(self.object_ids, start=1):
            area = int((labels == channel).sum())
            if object_id in given:
                self.largest[object_id] = area
            elif 0 < area < share * self.largest.get(object_id, 0):
                specks.append(channel)
            else:
                self.largest[object_id] = max(area, self.largest.get(object_id, 0))
        if not specks:
            return logits, presence
        logits, presence = logits.clone(), presence.clone()
        for channel in specks:
            give_to_background(logits, labels, channel, labels == channel)
            logits[0, channel] = -1e4
        presence[:, [channel - 1 for channel in specks]] = 0.0
        return logits, presence

    def _note_last_seen(self, labels: torch.Tensor, given: list[int]) -> None:
        """Record, for each object with a mask on this frame (`labels`: stride-4 labels of the valid area), the
        frame and box of that mask, and the object's size: the largest its masks have been since it was given, since
        a cut, or since it was last searched for in the whole frame (a partly hidden object keeps its size)."""
        if not self.model.config.window_frames:
            return
        for channel, object_id in enumerate(self.object_ids, start=1):
            rows, cols = torch.nonzero(labels == channel, as_tuple=True)
            if len(rows):
                box = (int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max()))
                extent = math.sqrt(len(rows))
                last = self._window_of(object_id, given)
                if last is not None:
                    extent = max(extent, last.size)
                self.last_seen[object_id] = LastMask(self.frame_index, box, extent)

    def _impose(self, logits: torch.Tensor, mask: np.ndarray, given: list[int], size: tuple[int, int]) -> torch.Tensor:
        """Replace the given objects' logits by the mask; other objects keep their prediction outside it. Records
        each given object's area in cells of the stride-4 grid (`given_area`)."""
        h, w = logits.shape[-2:]
        labels = torch.tensor(mask, device=self.device)[None, None].float()
        labels = F.interpolate(labels, size=size, mode="nearest")
        labels = F.pad(labels, (0, w * LOGIT_STRIDE - size[1], 0, h * LOGIT_STRIDE - size[0]))
        covered = torch.zeros_like(logits)
        for channel, object_id in enumerate(self.object_ids, start=1):
            if object_id in given:
                covered[:, channel:channel + 1] = F.avg_pool2d((labels == object_id).float(), LOGIT_STRIDE)
                self.given_area[object_id] = float(covered[:, channel].sum())
        inside = covered[:, 1:].sum(1, keepdim=True).clamp(max=1)
        probs = logits.float().softmax(1) * (1 - inside)
        given_channels = [c for c, i in enumerate(self.object_ids, start=1) if i in given]
        probs[:, given_channels] = covered[:, given_channels]
        probs[:, 0] = (1 - probs[:, 1:].sum(1)).clamp(min=0)
        return torch.log(probs.clamp(min=1e-4)).to(logits.dtype)

def frame_pixels(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """An RGB frame (H, W, 3) as a uint8 tensor on `device` (through pinned memory to a GPU)."""
    tensor = torch.from_numpy(np.require(image, np.uint8, ("C_CONTIGUOUS", "WRITEABLE")))
    if device.type == "cuda":
        tensor = tensor.pin_memory().to(device, non_blocking=True)
    return tensor


def keep_given_mask(labels: np.ndarray, mask: np.ndarray) -> None:
    """The user's mask wins on its frame: its objects are exactly where it puts them, not where the model
    re-renders them (`labels` is changed in place)."""
    given = mask != 0
    labels[np.isin(labels, np.unique(mask[given]))] = 0
    labels[given] = mask[given]


def give_to_background(logits: torch.Tensor, labels: torch.Tensor, channel: int, pixels: torch.Tensor) -> None:
    """In place: the background wins the object's `pixels` (bool, the shape of `labels`, which covers the top-left
    of the stride-4 logits) at the object's own logit there, and `labels` marks them background."""
    h, w = labels.shape
    logits[0, 0, :h, :w] = torch.where(pixels, logits[0, channel, :h, :w], logits[0, 0, :h, :w])
    labels[pixels] = 0


def valid_cells(size: tuple[int, int]) -> tuple[int, int]:
    """(rows, columns) of the stride-4 logit grid that cover the processed frame of `size` (h, w), not its
    padding."""
    return math.ceil(size[0] / LOGIT_STRIDE), math.ceil(size[1] / LOGIT_STRIDE)


def frame_result(logits: torch.Tensor, object_ids: list[int], size: tuple[int, int], input_size: tuple[int, int],
                 presence: torch.Tensor, pixels: torch.Tensor | None = None, edge_radius: int = 0) -> FrameResult:
    """The labels at the input size and the logits on the CPU, from (1, 1+K, H', W') stride-4 logits,
    with each object's presence probability (K,).

    `size` is the (h, w) the model saw (see `processing_size`); rows and columns of the logits beyond
    it (padding) are dropped. With the frame's `pixels` (H, W, 3, uint8, see `frame_pixels`) and an
    `edge_radius`, the labels follow its colour edges near the borders (`edge_labels`).
    """
    valid = valid_cells(size)
    logits = logits[:, :, : valid[0], : valid[1]]
    # One interpolation from the stride-4 grid straight to the input size (the grid may overhang by < 4 px).
    scale = (input_size[0] / size[0], input_size[1] / size[1])
    target = (round(valid[0] * LOGIT_STRIDE * scale[0]), round(valid[1] * LOGIT_STRIDE * scale[1]))
    # Channels-last makes the per-pixel argmax a reduction over adjacent values (several times faster).
    full = F.interpolate(logits.contiguous(memory_format=torch.channels_last), size=target, mode="bilinear",
                         align_corners=False)
    lookup = torch.tensor([0] + list(object_ids), dtype=torch.uint8, device=full.device)
    if pixels is not None and edge_radius:
        channels = edge_labels(full[0], logits[0], pixels.to(full.device), edge_radius)
    else:
        channels = full[0, :, : input_size[0], : input_size[1]].argmax(0)
    labels = lookup[channels].cpu().numpy()
    return FrameResult(labels, logits[0].cpu(), list(object_ids), presence.float().cpu().numpy())


def processing_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(h, w) the model sees: the input scaled down so that its longest side is at most `max_side`."""
    if max_side <= 0 or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(16, round(height * scale)), max(16, round(width * scale))
