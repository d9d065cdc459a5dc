"""Local mask propagation: the previous frame's masks carried to the current frame by local matching.

Global attention over every memory patch finds an object wherever something looks like it, which
confuses similar objects and leaks onto similar-looking background. Objects move little between two
consecutive frames, so each stride-16 patch of the current frame also compares its key with the keys
of the previous frame's patches in a (2r+1) x (2r+1) window around the same place; the softmax of those
similarities weights the previous frame's per-object coverage. The result is a coarse per-object
prior, local by construction, that the prediction module refines (`STMA.segment`).

The prior must not veto an object that the previous frame does not hold (hidden, or out of the
frame): its log-prior would be strongly negative everywhere and the memory could never bring the
object back. So each object's log-prior is gated by how much of it the previous frame holds: an
object absent there gets no prior at all and is found again from memory alone.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn


class LocalPropagation(nn.Module):
    """Per-object prior (B, 1+n, h, w) from local matching against the previous frame.

    `weight` scales the log-prior that is added to the final logits. It starts at one: the softmax
    of logits plus log-prior is the network's probabilities times the prior, renormalised, and
    training then learns how far to trust the prior. The prior has a learned floor, and an object's
    log-prior is scaled by its gate mass / (mass + tau), mass being its area in the previous frame
    in patches (tau learned too).
    """

    def __init__(self, dim: int, key_dim: int | None, radius: int) -> None:
        super().__init__()
        self.radius = radius
        if key_dim is not None:  # learned keys; without them, the model gives `encoder_keys`
            self.norm = nn.LayerNorm(dim)
            self.key = nn.Linear(dim, key_dim)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(10.0)))  # scale of the cosine similarity
        self.weight = nn.Parameter(torch.ones(()))
        self.log_floor = nn.Parameter(torch.tensor(math.log(1e-2)))
        self.log_tau = nn.Parameter(torch.tensor(math.log(0.5)))

    def keys(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Unit-length matching keys (B, key_dim, h, w) from stride-16 tokens (B, h*w, C)."""
        keys = F.normalize(self.key(self.norm(tokens)), dim=-1)
        return keys.transpose(1, 2).reshape(keys.shape[0], -1, *grid)

    def forward(self, keys: torch.Tensor, previous_keys: torch.Tensor, previous_coverage: torch.Tensor,
                similarity: torch.Tensor | None = None) -> torch.Tensor:
        """Prior (B, c, h, w) from keys (B, d, h, w) and the previous frame's keys and coverage (B, c, h, w).

        `similarity`: their `window_similarity`, when the caller has computed it already.
        """
        b, d, h, w = keys.shape
        if similarity is None:
            similarity = window_similarity(keys, previous_keys, self.radius)
        index, inside = _windows(h, w, self.radius, keys.device)
        weights = (similarity * self.log_temperature.exp()).masked_fill(~inside, float("-inf")).softmax(dim=1)
        coverage = previous_coverage.flatten(2)[:, :, index]  # (B, c, k, h*w); outside the frame: masked above
        return (coverage * weights[:, None].to(coverage.dtype)).sum(2).view(b, -1, h, w)

    def gate(self, previous_coverage: torch.Tensor) -> torch.Tensor:
        """Per-channel gate (B, 1+n) in [0, 1]: 1 for the background, mass / (mass + tau) for objects."""
        mass = previous_coverage[:, 1:].sum((2, 3))
        gate = mass / (mass + self.log_tau.exp())
        return torch.cat([torch.ones_like(gate[:, :1]), gate], dim=1)

    def log_prior(self, prior: torch.Tensor, gate: torch.Tensor, scale: int) -> torch.Tensor:
        """The weighted, gated log-prior at `scale` times the prior's resolution, to add to logits.

        prior (B, 1+n, h, w), gate (B, 1+n) from `gate`.
        """
        return gated_log_prior(prior, gate, self.weight, self.log_floor, scale)


class MemoryMatching(nn.Module):
    """Per-object map (B, c, h, w) read from every memory frame by global matching.

    The local prior cannot find an object that the previous frame does not hold (hidden, or out of
    view). Here each stride-16 patch of the current frame compares its key with the keys of every
    patch of every memory frame (the annotated frame, the working frames, the previous frame); the
    softmax of those similarities weights the memory patches' object coverage, as the mask readout of
    STM/XMem does. The map tells where each object may be anywhere in the frame. It is used for the
    objects the previous frame does not hold (`STMA.predict`): as a second ID map into the decoder,
    and as a log-prior on their logits with a learned `weight` (from 1) and floor: an object absent
    from the previous frame is unlikely where nothing in memory looks like it.
    """

    def __init__(self, top_k: int = 0) -> None:
        super().__init__()
        self.top_k = top_k
        self.log_temperature = nn.Parameter(torch.tensor(math.log(10.0)))
        self.weight = nn.Parameter(torch.ones(()))
        self.log_floor = nn.Parameter(torch.tensor(math.log(1e-2)))

    def forward(self, keys: torch.Tensor, memory_keys: list[torch.Tensor], coverages: list[torch.Tensor]) -> torch.Tensor:
        """keys (B, d, h, w); per memory frame its keys (B, d, h, w) and coverage (B, c, h, w).

        With `top_k`, each patch reads only its k most similar memory patches (softmax over those), as
        label propagation on pretrained features does: a few sure matches, not a blur of many weak ones.
        """
        b, d, h, w = keys.shape
        query = keys.flatten(2).transpose(1, 2) * self.log_temperature.exp()  # (B, N, d)
        key = torch.cat([k.flatten(2) for k in memory_keys], dim=2).transpose(1, 2)  # (B, mN, d)
        value = torch.cat([c.flatten(2) for c in coverages], dim=2).transpose(1, 2).to(query.dtype)  # (B, mN, c)
        if self.top_k and key.shape[1] > self.top_k:
            best, index = (query @ key.transpose(1, 2)).topk(self.top_k, dim=-1)  # (B, N, k)
            picked = value.gather(1, index.flatten(1)[..., None].expand(-1, -1, value.shape[-1]))
            read = (best.softmax(-1)[..., None] * picked.view(b, -1, self.top_k, value.shape[-1])).sum(2)
        else:
            read = F.scaled_dot_product_attention(query[:, None], key[:, None], value[:, None], scale=1.0)[:, 0]
        return read.transpose(1, 2).reshape(b, -1, h, w)

    def log_prior(self, readout: torch.Tensor, gate: torch.Tensor, scale: int) -> torch.Tensor:
        """The weighted log of the readout (B, 1+n, h, w) at `scale` times its resolution, on the objects
        only, each scaled by its gate (B, n); the background gets 0."""
        return gated_log_prior(readout, F.pad(gate, (1, 0)), self.weight, self.log_floor, scale)


def encoder_keys(f8: torch.Tensor, f16: torch.Tensor) -> torch.Tensor:
    """Unit-length matching keys (B, c8 + c16, h, w) from the encoder's own features.

    The stride-8 features (averaged to stride 16) and the stride-16 features are each L2-normalised and
    concatenated, as label propagation on pretrained features does: fine detail and object-level meaning.
    """
    k8 = F.normalize(F.avg_pool2d(f8.float(), 2), dim=1)
    k16 = F.normalize(f16.float(), dim=1)
    return (torch.cat([k8, k16], dim=1) * math.sqrt(0.5)).to(f16.dtype)


def window_similarity(keys: torch.Tensor, previous_keys: torch.Tensor, radius: int) -> torch.Tensor:
    """Cosine similarity (B, (2r+1)^2, h*w) of each patch's key (B, d, h, w) with the previous frame's keys in
    the window of `radius` around it, in `F.unfold`'s window order; 0 where the window leaves the frame.

    One matrix product of all patches against all, then the windows picked out of it: far faster on a CPU
    than unfolding the d-dimensional keys into every window.
    """
    b, d, h, w = keys.shape
    index, inside = _windows(h, w, radius, keys.device)
    every = torch.bmm(keys.flatten(2).transpose(1, 2), previous_keys.flatten(2).to(keys.dtype))  # (B, N, N)
    picked = every.gather(2, index.t()[None].expand(b, -1, -1)).transpose(1, 2)  # (B, k, N)
    return picked.masked_fill(~inside, 0)


@functools.lru_cache(maxsize=16)
def _windows(h: int, w: int, radius: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """For each window position k (row-major, as F.unfold) and patch n of an (h, w) grid: the index of the
    patch it covers, (k, N), and whether that lies inside the grid, (k, N) (index 0 where it does not).

    Made outside inference mode whatever the caller's mode: the cached tables serve inference and training
    alike, and autograd refuses tensors made in inference mode.
    """
    with torch.inference_mode(False):
        size = 2 * radius + 1
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        dy, dx = torch.meshgrid(torch.arange(size) - radius, torch.arange(size) - radius, indexing="ij")
        y = ys.flatten()[None] + dy.flatten()[:, None]
        x = xs.flatten()[None] + dx.flatten()[:, None]
        inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        return torch.where(inside, y * w + x, 0).to(device), inside.to(device)


def shot_continuity(similarity: torch.Tensor) -> torch.Tensor:
    """How well a frame continues the previous one, (B,), from their `window_similarity` (B, k, N): each
    patch's best cosine similarity to the previous frame's patches within the window, averaged over the frame.

    On ImageNet keys it is about 0.95 between frames of one shot (0.77 with a car sweeping past close to
    the camera) and at most 0.6 across a hard cut, on the real clips of benchmarks/real.py.
    """
    return similarity.float().max(1).values.mean(1)


def shown_share(keys: torch.Tensor, memory_keys: list[torch.Tensor], memory_coverage: list[torch.Tensor],
                previous_coverage: torch.Tensor, threshold: float) -> torch.Tensor:
    """How much of each object a frame shows again, (B, n): the count of the frame's patches whose key matches
    one of the object's patches in memory (coverage over one half) at cosine `threshold` or more, over the
    object's area in the previous frame, in patches. NaN for an object the previous frame does not hold.

    keys (B, d, h, w); per memory frame its keys (B, d, h', w') and object coverage (B, n, h', w');
    previous_coverage (B, n, h, w). Across a hard cut to a shot without the object this is near 0 even
    when the new shot has things of its colour; on a cut back to the object's shot, or to another view of
    it, it is a large share (`STMA._locate`).
    """
    query = keys.flatten(2).transpose(1, 2).float()  # (B, N, d)
    memory = torch.cat([k.flatten(2) for k in memory_keys], dim=2).float()  # (B, d, M)
    objects = torch.cat([c.flatten(2) for c in memory_coverage], dim=2) > 0.5  # (B, n, M)
    matched = (query @ memory >= threshold).float()  # (B, N, M)
    shown = (matched @ objects.transpose(1, 2).float() > 0).sum(1)  # (B, n): patches matching one of its own
    area = previous_coverage.float().flatten(2).sum(2)
    return torch.where(area >= 1, shown / area.clamp(min=1), torch.nan)


def given_votes(keys: torch.Tensor, given_keys: list[torch.Tensor], given_coverage: list[torch.Tensor],
                given_objects: list[torch.Tensor], patches: torch.Tensor, least: int, alike: float) -> torch.Tensor:
    """Whether the frames where each object's mask was given vouch for each patch of its mask, (B, n, N): 1 where the
    patch's best match there is one of the object's own patches, 0 where it is not, NaN off the object's patches and
    for an object those frames cannot vouch for: one with under `least` given patches of its own, or with look-alikes
    there (its given patches match patches more than one patch away from it at mean best cosine `alike` or more: a
    crowd of such objects, whose patches match a look-alike as well as their own wherever they go).

    keys (B, d, h, w): the frame's; per given frame, its keys (B, d, h', w'), background + object coverage
    (B, 1+n, h', w') (a patch belongs to its largest share) and which objects' masks it was given (B, n) bool;
    patches (B, n, N) bool: each object's patches on the frame.
    """
    n = patches.shape[1]
    query = keys.flatten(2).float()  # (B, d, N)
    memory = torch.cat([k.flatten(2) for k in given_keys], dim=2).float()  # (B, d, G)
    owners = [F.one_hot(c.argmax(1), n + 1)[..., 1:].permute(0, 3, 1, 2).float() for c in given_coverage]
    owner = torch.cat([o.flatten(2) for o in owners], 2).bool()  # (B, n, G)
    apart = ~torch.cat([F.max_pool2d(o, 3, 1, 1).flatten(2) for o in owners], 2).bool()  # (B, n, G)
    read = torch.cat([f[:, :, None].expand(-1, -1, k[0, 0].numel()) for f, k in zip(given_objects, given_keys)], 2)
    votes = torch.full(patches.shape, torch.nan, device=keys.device)
    for b, j in zip(*torch.nonzero(patches.any(2) & ((owner & read).sum(2) >= least), as_tuple=True)):
        given = memory[b][:, read[b, j]]  # (d, g): the patches of the frames where the object's mask was given
        own, away = owner[b, j][read[b, j]], apart[b, j][read[b, j]]
        look_alike = (given[:, own].t() @ given[:, away]).amax(1).mean() if away.any() else -1
        if look_alike < alike:
            similarity = query[b][:, patches[b, j]].t() @ given  # (p, g): only the object's patches are read
            votes[b, j, patches[b, j]] = (similarity[:, own].amax(1) >= similarity.amax(1)).float()
    return votes


def given_match(keys: torch.Tensor, given_keys: list[torch.Tensor], given_coverage: list[torch.Tensor],
                given_objects: list[torch.Tensor], patches: torch.Tensor, least: int, alike: float) -> torch.Tensor:
    """Share of each object's patches whose best match on the frames where its mask was given is one of its own,
    (B, n): the mean of its `given_votes` (same arguments). NaN for an object without a patch on the frame or that
    those frames cannot vouch for."""
    return given_votes(keys, given_keys, given_coverage, given_objects, patches, least, alike).nanmean(2)


def stray_parts(numbers: torch.Tensor, votes: torch.Tensor, share: float) -> torch.Tensor:
    """The parts of each object's mask that are apart from its largest part and that the given frames do not vouch
    for, (B, n, h, w) bool: each part (`numbers` (B, n, h, w), `connected_parts` of its patches) other than its
    largest, where under `share` of the patches match best its own (`given_votes` of those patches, (B, n, h*w)).

    A mask left where an object was, or on something that looks like the background there, comes off the object
    as a part of its own, and matches the background (or another object) on the given frames.
    """
    stray = torch.zeros(numbers.shape, dtype=torch.bool, device=numbers.device)
    for b, j in zip(*torch.nonzero(numbers.flatten(2).amax(2) > 0, as_tuple=True)):
        found, sizes = numbers[b, j][numbers[b, j] > 0].unique(return_counts=True)
        object_votes = votes[b, j].view(numbers.shape[-2:])
        for number, size in zip(found.tolist(), sizes.tolist()):
            part = numbers[b, j] == number
            if size < int(sizes.max()) and bool(object_votes[part].nanmean() < share):  # NaN: nothing to judge
                stray[b, j] |= part
    return stray


def connected_parts(masks: torch.Tensor) -> torch.Tensor:
    """The 8-connected parts of each of `masks` (..., h, w) bool, (..., h, w) long: 0 off the mask, and on it one
    number per part (unique within its mask)."""
    h, w = masks.shape[-2:]
    flat = masks.reshape(-1, 1, h, w)
    numbers = torch.arange(1, h * w + 1, device=masks.device, dtype=torch.float32).view(1, 1, h, w) * flat
    while True:  # each part takes its largest number, spreading one cell per round
        spread = F.max_pool2d(numbers, 3, 1, 1) * flat
        if torch.equal(spread, numbers):
            return numbers.long().view(masks.shape)
        numbers = spread


def part_counts(numbers: torch.Tensor) -> torch.Tensor:
    """How many parts each of `numbers` (..., h, w) (from `connected_parts`) holds, (...)."""
    sorted_numbers = numbers.flatten(-2).sort(-1).values
    starts = sorted_numbers[..., 1:] != sorted_numbers[..., :-1]
    return starts.sum(-1) + (sorted_numbers[..., :1] > 0).squeeze(-1).long()


def gated_log_prior(maps: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor, log_floor: torch.Tensor,
                    scale: int) -> torch.Tensor:
    """weight * gate * log(maps + floor), at `scale` times the resolution of maps (B, c, h, w); gate (B, c)."""
    maps = F.interpolate(maps, scale_factor=scale, mode="bilinear", align_corners=False)
    return weight * gate[:, :, None, None] * torch.log(maps + log_floor.exp())
