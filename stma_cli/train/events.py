"""Long synthetic clips planned around the events a tracker must survive.

`SyntheticVideos` draws random scenes in which hard moments happen by chance. Here each clip is
planned around them:

- occlusion: an unannotated occluder moves onto an annotated object, covers it completely for a
  while (moving with it), then moves off;
- exit and re-entry: an annotated object leaves the frame, stays out, and comes back, possibly
  from another side;
- twins: two annotated objects with the same texture family, shape kind and size;
- crowd: 5-10 look-alike instances walking across the scene, only some of them annotated, so that
  only position and motion tell the annotated ones apart;
- a decoy: an unannotated look-alike that moves beside the object that is about to be occluded or to
  leave, touching it, and stays in view while it is away: the object's id must not slide onto it;
- fast motion (one object much faster than the others), a moving camera, and a scale change;
- a cut: a hard cut to another shot (another background, the unannotated look-alikes but none of the
  annotated objects) and, a while later, a cut back to the first shot, where the objects are found again.

A clip is planned over `span` frames and rendered at chosen frame times only, so training can
sample a few frames far apart (the gaps inference bridges from memory) at the cost of a few.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from stma_cli.train.assets import AssetBank, asset_bank, split_assets
from stma_cli.train.seeded import ClipKey, SeededClips
from stma_cli.train.sprites import Look, random_look, similar_look
from stma_cli.train.synthetic import (
    HELDOUT_CONFIG, TRAIN_CONFIG, Scene, SceneObject, SyntheticConfig, check_clip_args, cut_in, plan_background,
    plan_object, render_scene, sample_times, walk,
)


@dataclass(frozen=True)
class EventConfig:
    """How often each event happens and how long it lasts. Durations are fractions of the clip's span."""

    scene: SyntheticConfig = replace(TRAIN_CONFIG, p_occluder=0.0, p_leave=0.0, p_scene_cut=0.0)
    """Look, motion and photometry of everything else (its own occluder, exits and cuts are off)."""
    objects: tuple[int, int] = (1, 3)
    """Range of the number of annotated objects."""
    p_occlusion: float = 0.7
    occlusion: tuple[float, float] = (0.12, 0.45)
    """How long the occluded object stays completely hidden."""
    p_exit: float = 0.5
    absence: tuple[float, float] = (0.1, 0.3)
    """How long the object that leaves stays out of the frame."""
    p_twins: float = 0.5
    p_crowd: float = 0.3
    p_decoy: float = 0.0
    """Chance, for the occluded object and for the one that leaves (unless of a crowd), of a decoy beside it."""
    crowd: tuple[int, int] = (5, 10)
    p_fast: float = 0.3
    fast_speed: tuple[float, float] = (0.015, 0.035)
    """Speed of the fast object per frame, in units of sqrt(H * W) pixels."""
    p_scale: float = 0.4
    scale_change: tuple[float, float] = (1.5, 2.5)
    """Range of the factor by which one object grows or shrinks over the clip."""
    p_cut: float = 0.0
    cut: tuple[float, float] = (0.15, 0.35)
    """How long the other shot lasts, before the cut back."""
    require_all: bool = False
    """Plan again until every annotated object shows in frame 0 (so that every planned event happens)."""


TRAIN_EVENTS = EventConfig(p_decoy=0.5)
LONG_EVENTS = EventConfig(
    scene=replace(HELDOUT_CONFIG, camera_motion=1.2, p_occluder=0.0, p_leave=0.0), objects=(2, 4),
    p_occlusion=1.0, p_exit=1.0, p_twins=1.0, p_crowd=0.4, p_fast=1.0, p_scale=1.0, require_all=True,
)
"""Settings of the long benchmark: every clip holds every event; 40% of them hold a crowd."""
CUT_EVENTS = replace(LONG_EVENTS, p_occlusion=0.0, p_exit=0.0, p_cut=1.0)
"""Settings of the cut benchmark: every clip cuts to another shot and back; its only absences are the cuts'."""

_EDGE = 0.15
"""No event starts in the first or ends in the last 15% of the span, so there is a before and an after."""


@dataclass
class Event:
    """An object's absence: `kind` "occlusion", "exit" or "cut", from frame `start` (it starts going) to
    `end` (it is fully back)."""

    kind: str
    target: SceneObject
    start: int
    end: int

    def as_dict(self) -> dict:
        return {"kind": self.kind, "object": self.target.label, "start": self.start, "end": self.end}


@dataclass
class _Plan:
    rng: np.random.Generator
    bank: AssetBank
    cfg: EventConfig
    span: int
    size: tuple[int, int]
    soft: bool = False
    background: tuple[str, int] = ("photo", 0)
    events: list[Event] = field(default_factory=list)

    @property
    def unit(self) -> float:
        return math.sqrt(self.size[0] * self.size[1])

    def obj(self, label: int, look: Look, shape: str | None = None, area: float | None = None) -> SceneObject:
        return plan_object(self.rng, self.bank, self.cfg.scene, self.span, self.size, label, look, self.soft,
                           shape, area)


def plan_events(rng: np.random.Generator, bank: AssetBank, cfg: EventConfig, span: int, size: tuple[int, int],
                max_objects: int) -> tuple[Scene, list[Event]]:
    """A scene of `span` frames with its events; annotated objects are labelled 1..n, occluders drawn last."""
    plan = _Plan(rng, bank, cfg, span, size, soft=bool(rng.random() < cfg.scene.p_blur))
    background = plan_background(rng, bank, cfg.scene, span, size, plan.soft)
    plan.background = background.identity
    cameras = np.linalg.inv(background.out_to_src) @ background.out_to_src[0]
    low, high = cfg.objects
    count = int(rng.integers(min(low, max_objects), min(high, max_objects) + 1))

    annotated: list[SceneObject] = []
    unannotated: list[SceneObject] = []
    if rng.random() < cfg.p_crowd:
        crowd = _plan_crowd(plan)
        chosen = int(rng.integers(1, count + 1))
        annotated += crowd[:chosen]
        unannotated += crowd[chosen:]
    looks: list[Look] = []
    while len(annotated) < count:
        if len(looks) == 1 and rng.random() < cfg.p_twins:
            annotated.append(_plan_twin(plan, annotated[-1], looks[0]))
            looks.append(looks[0])
            continue
        look = random_look(rng, bank, plan.background)
        shape = ("ellipse", "blob", "limbs", "polygon", "silhouette" if bank.shapes else "star")[int(rng.integers(5))]
        annotated.append(plan.obj(0, look, shape))
        looks.append(look)
    look_of = {id(obj): look for obj, look in zip(annotated[len(annotated) - len(looks):], looks)}  # not of a crowd
    for label, obj in enumerate(annotated, start=1):
        obj.label = label
    for _ in range(int(rng.integers(0, cfg.scene.max_distractors + 1))):
        look = similar_look(rng, looks[int(rng.integers(len(looks)))]) if looks and rng.random() < cfg.scene.p_similar \
            else random_look(rng, bank, plan.background)
        unannotated.append(plan.obj(0, look))

    # The paths change in this order because each step reads the paths the previous ones made.
    targets = [annotated[k] for k in rng.permutation(len(annotated))]
    exit_target = targets[0] if rng.random() < cfg.p_exit else None
    occluded = next((t for t in targets if t is not exit_target), None) if rng.random() < cfg.p_occlusion else None
    fast = next((t for t in reversed(targets) if t is not exit_target), None) if rng.random() < cfg.p_fast else None
    if fast is not None:
        _make_fast(plan, fast)
    if rng.random() < cfg.p_scale:
        _change_scale(plan, targets[int(rng.integers(len(targets)))])
    if exit_target is not None:
        _script_exit(plan, exit_target)
    occluders = [] if occluded is None else [_script_occlusion(plan, occluded)]
    if cfg.p_decoy:  # no draw when off, so that the benchmarks' clips stay as they were
        for target in (exit_target, occluded):
            if target is not None and id(target) in look_of and rng.random() < cfg.p_decoy:
                goes = next(e.start for e in plan.events if e.target is target)
                until = goes if target is exit_target else span  # beside the occluded object all along
                unannotated.append(_plan_decoy(plan, target, look_of[id(target)], goes, until))

    objects = annotated + unannotated
    objects = [objects[k] for k in rng.permutation(len(objects))] + occluders
    scene = Scene([(background, 0, span)], cameras, objects, front=len(occluders))
    if cfg.p_cut and rng.random() < cfg.p_cut:
        _script_cut(plan, scene, annotated)
    return scene, plan.events


# -- events ----------------------------------------------------------------------------------------


def _script_cut(plan: _Plan, scene: Scene, annotated: list[SceneObject]) -> None:
    """Cut to another shot for a while and back: every annotated object is away meanwhile."""
    span, rng = plan.span, plan.rng
    length = max(1, round(rng.uniform(*plan.cfg.cut) * span))
    earliest = max(1, round(_EDGE * span))
    start = int(rng.integers(earliest, max(earliest, span - earliest - length) + 1))
    end = min(span, start + length)
    other = plan_background(rng, plan.bank, plan.cfg.scene, span, plan.size, plan.soft)
    scene.backgrounds = cut_in(scene.backgrounds, other, start, end)
    scene.away = (start, end)
    plan.events += [Event("cut", obj, start, end) for obj in annotated]


def _plan_crowd(plan: _Plan) -> list[SceneObject]:
    """5-10 look-alikes (one texture family, one shape kind, similar sizes) walking across a band of the frame."""
    rng = plan.rng
    H, W = plan.size
    members = int(rng.integers(plan.cfg.crowd[0], plan.cfg.crowd[1] + 1))
    look = random_look(rng, plan.bank, plan.background)
    shape = ("ellipse", "limbs", "blob", "silhouette" if plan.bank.shapes else "polygon")[int(rng.integers(4))]
    area = math.exp(rng.uniform(math.log(0.006), math.log(0.025)))
    band = rng.uniform(0.35, 0.7) * H, rng.uniform(0.1, 0.2) * H
    heading = rng.choice((-1.0, 1.0))
    crowd = []
    for _ in range(members):
        obj = plan.obj(0, similar_look(rng, look), shape, area * rng.uniform(0.8, 1.25))
        start = np.array([rng.uniform(0.05, 0.95) * W, band[0] + rng.uniform(-1, 1) * band[1]])
        direction = heading if rng.random() < 0.7 else -heading
        speed = rng.uniform(0.002, 0.008) * plan.unit
        velocity = np.array([direction * speed, rng.normal(0, 0.1 * speed)])
        low = np.array([-0.1 * W, band[0] - band[1]])
        high = np.array([1.1 * W, band[0] + band[1]])
        obj.poses[:, :2] = walk(rng, plan.span, start, velocity, 0.15 * speed, low, high, max_speed=1.5 * speed)
        obj.poses[:, 2] = obj.poses[0, 2] + 0.2 * (obj.poses[:, 2] - obj.poses[0, 2])
        obj.follows_camera = True  # the band stays in view while the camera moves
        crowd.append(obj)
    return crowd


def _look_alike(plan: _Plan, obj: SceneObject, look: Look) -> SceneObject:
    """An unlabelled object of the same texture family (`look` is `obj`'s), shape kind and size as `obj`,
    moving in the same frame (camera or output pixels); its path is the caller's to set."""
    H, W = plan.size
    area = _display_area(obj) / (H * W) * plan.rng.uniform(0.85, 1.15)
    alike = plan.obj(0, similar_look(plan.rng, look), obj.shape, min(area, 0.2))
    alike.follows_camera = obj.follows_camera
    return alike


def _plan_twin(plan: _Plan, first: SceneObject, look: Look) -> SceneObject:
    """An object of the same texture family, shape kind and size as `first`, starting near it."""
    H, W = plan.size
    twin = _look_alike(plan, first, look)
    offset = plan.rng.normal(0, 0.15, 2) * np.array([W, H])
    start = np.clip(first.poses[0, :2] + offset, [0.15 * W, 0.15 * H], [0.85 * W, 0.85 * H])
    twin.poses[:, :2] += start - twin.poses[0, :2]
    return twin


def _plan_decoy(plan: _Plan, target: SceneObject, look: Look, goes: int, until: int) -> SceneObject:
    """An unannotated look-alike of `target` (same texture family, shape kind and size) that moves beside it,
    touching it, up to frame `until`, and then walks on slowly in view; at frame `goes` (the target starts to
    go) it lies on the side of the target that faces the frame's centre, give or take 60 degrees."""
    rng = plan.rng
    H, W = plan.size
    decoy = _look_alike(plan, target, look)
    reach = _outer_radius(target) * np.exp(target.poses[:, 3]) + _outer_radius(decoy) * np.exp(decoy.poses[:, 3])
    inward = np.array([W / 2, H / 2]) - target.poses[max(goes - 1, 0), :2]
    angle = math.atan2(inward[1], inward[0]) + rng.uniform(-math.pi / 3, math.pi / 3)
    offset = np.array([math.cos(angle), math.sin(angle)])[None] * 0.8 * reach[:, None]
    path = decoy.poses[:, :2]
    path[:until] = target.poses[:until, :2] + offset[:until]
    if until < plan.span:
        speed = 0.004 * plan.unit
        low, high = np.array([0.05 * W, 0.05 * H]), np.array([0.95 * W, 0.95 * H])
        start = np.clip(path[until - 1], low, high)
        path[until:] = walk(rng, plan.span - until, start, speed * _unit_vector(rng), 0.25 * speed, low, high,
                            max_speed=2 * speed)
    return decoy


def _script_exit(plan: _Plan, obj: SceneObject) -> None:
    """`obj` leaves the frame across one side, stays out, and comes back across the same or another side."""
    rng = plan.rng
    H, W = plan.size
    span = plan.span
    obj.follows_camera = True  # its path is in frame pixels
    reach = _outer_radius(obj) * math.exp(float(obj.poses[:, 3].max())) + 2.0
    moving = max(1, round(rng.uniform(0.04, 0.1) * span))  # frames to go out, and to come back in
    edge = max(1, round(_EDGE * span))
    absent = max(1, min(round(rng.uniform(*plan.cfg.absence) * span), span - 2 * edge - 2 * moving))
    leave = min(int(rng.integers(edge, max(edge, span - edge - absent - 2 * moving) + 1)), span - 1)
    out_side = int(rng.choice(4, p=_side_weights(W, H)))
    in_side = out_side if rng.random() < 0.3 else int(rng.choice(4, p=_side_weights(W, H)))
    here = obj.poses[leave, :2].copy()
    gone = _beyond(out_side, here, reach, W, H)
    comeback = _beyond(in_side, rng.uniform([0.1 * W, 0.1 * H], [0.9 * W, 0.9 * H]), reach, W, H)
    inside = rng.uniform([0.2 * W, 0.2 * H], [0.8 * W, 0.8 * H])
    back = min(span, leave + 2 * moving + absent)
    path = obj.poses[:, :2]
    for t in range(leave, span):
        if t < leave + moving:
            path[t] = here + (gone - here) * (t - leave + 1) / moving
        elif t < leave + moving + absent:
            path[t] = gone
        elif t < back:
            path[t] = comeback + (inside - comeback) * (t - leave - moving - absent + 1) / moving
    if back < span:
        speed = 0.01 * plan.unit * rng.uniform(0.3, 1.0)
        heading = rng.uniform(0, 2 * math.pi)
        velocity = speed * np.array([math.cos(heading), math.sin(heading)])
        low, high = np.array([0.1 * W, 0.1 * H]), np.array([0.9 * W, 0.9 * H])
        path[back:] = walk(rng, span - back, path[back - 1], velocity, 0.25 * speed, low, high, max_speed=2 * speed)
    obj.motion_blur = False
    plan.events.append(Event("exit", obj, leave, back))


def _script_occlusion(plan: _Plan, target: SceneObject) -> SceneObject:
    """An unannotated occluder that moves onto `target`, hides all of it for a while, then moves off."""
    rng = plan.rng
    span = plan.span
    hidden = max(1, round(rng.uniform(*plan.cfg.occlusion) * span))
    approach = max(1, round(rng.uniform(0.04, 0.1) * span))
    edge = max(1, round(_EDGE * span))
    latest = max(edge, span - edge - hidden)
    start = min(int(rng.integers(edge, latest + 1)), span - 1)
    end = min(span, start + hidden)
    scale = math.exp(float(target.poses[max(0, start - approach): end + approach, 3].max()))
    wobble = 0.0 if target.wobble is None else float(target.wobble[:, :, 0].sum(1).max())
    radius = _outer_radius(target) * scale * (1.0 + wobble) + 3.0
    look = random_look(rng, plan.bank, plan.background)
    occluder = plan.obj(0, look, ("ellipse", "blob")[int(rng.integers(2))])
    occluder.wobble = None
    occluder.motion_blur = False
    occluder.follows_camera = target.follows_camera
    occluder_scale = 1.15 * radius / max(_inner_radius(occluder), 1.0)
    occluder.poses[:, 3] = math.log(occluder_scale)
    occluder.poses[:, 2] = occluder.poses[0, 2]
    reach = radius + _outer_radius(occluder) * occluder_scale
    arrive, leave = (_unit_vector(rng) for _ in range(2))
    for t in range(span):
        if t < start:
            offset = arrive * reach * (start - t) / approach
        elif t < end:
            offset = np.zeros(2)
        else:
            offset = leave * reach * (t - end + 1) / approach
        occluder.poses[t, :2] = target.poses[t, :2] + offset
    plan.events.append(Event("occlusion", target, max(0, start - approach), min(span, end + approach)))
    return occluder


def _make_fast(plan: _Plan, obj: SceneObject) -> None:
    rng = plan.rng
    H, W = plan.size
    speed = rng.uniform(*plan.cfg.fast_speed) * plan.unit
    heading = rng.uniform(0, 2 * math.pi)
    velocity = speed * np.array([math.cos(heading), math.sin(heading)])
    low, high = np.array([0.1 * W, 0.1 * H]), np.array([0.9 * W, 0.9 * H])
    obj.poses[:, :2] = walk(rng, plan.span, obj.poses[0, :2], velocity, 0.2 * speed, low, high, max_speed=1.5 * speed)


def _change_scale(plan: _Plan, obj: SceneObject) -> None:
    factor = plan.rng.uniform(*plan.cfg.scale_change) ** plan.rng.choice((-1.0, 1.0))
    obj.poses[:, 3] += np.linspace(0.0, math.log(factor), plan.span)


# -- geometry helpers ------------------------------------------------------------------------------


def _outer_radius(obj: SceneObject) -> float:
    """Distance (sprite pixels) from the sprite's centre to its farthest visible pixel."""
    alpha = obj.sprite[3].numpy()
    ys, xs = np.nonzero(alpha > 0.02)
    if len(ys) == 0:
        return 1.0
    centre = alpha.shape[0] / 2
    return float(np.sqrt((ys + 0.5 - centre) ** 2 + (xs + 0.5 - centre) ** 2).max()) + 1.0


def _inner_radius(obj: SceneObject) -> float:
    """Radius (sprite pixels) of the largest disc around the sprite's centre that the silhouette fills."""
    alpha = obj.sprite[3].numpy()
    centre = alpha.shape[0] / 2
    ys, xs = np.nonzero(alpha < 0.5)
    border = centre - 1.0
    if len(ys) == 0:
        return border
    return float(min(np.sqrt((ys + 0.5 - centre) ** 2 + (xs + 0.5 - centre) ** 2).min() - 1.0, border))


def _display_area(obj: SceneObject) -> float:
    return float(obj.sprite[3].numpy().sum(dtype=np.float64)) * math.exp(2 * float(obj.poses[0, 3]))


def _unit_vector(rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0, 2 * math.pi)
    return np.array([math.cos(angle), math.sin(angle)])


def _side_weights(W: int, H: int) -> np.ndarray:
    """Left, right, top, bottom: the long sides are crossed more often."""
    weights = np.array([H, H, W, W], dtype=np.float64)
    return weights / weights.sum()


def _beyond(side: int, point: np.ndarray, reach: float, W: int, H: int) -> np.ndarray:
    """`point` moved just past `side` (0 left, 1 right, 2 top, 3 bottom) by `reach` pixels."""
    x, y = float(np.clip(point[0], 0, W)), float(np.clip(point[1], 0, H))
    return np.array([(-reach, y), (W + reach, y), (x, -reach), (x, H + reach)][side])


class EventVideos(SeededClips):
    """Map-style dataset of event clips; item i of seed s is a pure function of (s, i, max_skip).

    Items as SyntheticVideos ({"frames", "masks", "num_objects"}), plus "times" (the rendered frames'
    numbers in the planned span) and "events" (dicts: kind, object label, start and end frame in the span).
    With `max_skip` 1 the frames are consecutive; otherwise the gaps between them are drawn from 1..max_skip.
    """

    STREAM = 4

    def __init__(self, seed: int, length: int, num_frames: int = 8, size: tuple[int, int] = (384, 384),
                 max_objects: int = 3, assets: str = "train", config: EventConfig | None = None,
                 max_skip: int = 1) -> None:
        check_clip_args(num_frames, size, max_objects, seed, length)
        split_assets(assets)
        self.seed, self.length, self.num_frames = seed, length, num_frames
        self.size = (int(size[0]), int(size[1]))
        self.max_objects, self.assets, self.max_skip = max_objects, assets, max_skip
        self.config = config or TRAIN_EVENTS

    def __getitem__(self, key: int | ClipKey) -> dict:
        index, max_skip = self.unpack(key, self.max_skip)
        rng = self.rng(index)
        times = sample_times(rng, self.num_frames, max_skip) if max_skip > 1 else list(range(self.num_frames))
        events: list[Event] = []

        def plan() -> Scene:
            scene, planned = plan_events(rng, asset_bank(self.assets), self.config, times[-1] + 1, self.size,
                                         self.max_objects)
            events[:] = planned
            return scene

        frames, masks, count = render_scene(rng, plan, times, self.size, self.config.scene,
                                            require_all=self.config.require_all)
        return {"frames": frames, "masks": masks, "num_objects": count, "times": torch.tensor(times),
                "events": [event.as_dict() for event in events if event.target.label > 0]}
