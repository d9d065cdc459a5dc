"""Event clips: scripted occlusions, exits and re-entries, twins and crowds, rendered at sampled frame times."""
from __future__ import annotations

import importlib.util
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from stma_cli.train.data import make_dataset
from stma_cli.train.assets import asset_bank
from stma_cli.train.events import CUT_EVENTS, LONG_EVENTS, TRAIN_EVENTS, EventVideos, plan_events
from stma_cli.train.seeded import ClipKey
from stma_cli.train.synthetic import SyntheticVideos

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("skimage") is None or importlib.util.find_spec("skvideo") is None,
    reason="event clips need scikit-image and scikit-video",
)
SIZE = (120, 192)


def _areas(item: dict) -> torch.Tensor:
    """(objects, frames) pixel counts."""
    masks = item["masks"]
    return torch.stack([(masks == k).sum((1, 2)) for k in range(1, item["num_objects"] + 1)])


@pytest.fixture(scope="module")
def long_items() -> list[dict]:
    torch.set_num_threads(1)
    clips = EventVideos(seed=5, length=3, num_frames=40, size=SIZE, max_objects=4, assets="heldout",
                        config=LONG_EVENTS)
    return [clips[i] for i in range(3)]


def test_long_clips_hold_every_planned_event_as_planned(long_items) -> None:
    for item in long_items:
        areas = _areas(item)
        assert 2 <= item["num_objects"] <= 4
        assert (areas[:, 0] > 0).all()  # every annotated object shows in frame 0
        kinds = sorted(event["kind"] for event in item["events"])
        assert kinds == ["exit", "occlusion"]
        for event in item["events"]:
            track = areas[event["object"] - 1]
            assert 0 < event["start"] < event["end"] <= 40
            gone = (track[event["start"]: event["end"]] == 0).nonzero().flatten()
            assert len(gone) >= 1, event  # fully hidden or out of view for a while
            assert (track[: event["start"]] > 0).any() and track[0] > 0


def test_cut_clips_take_every_object_away_for_the_other_shot_and_bring_it_back() -> None:
    """The cut set's clips: one cut event per annotated object, all over the same frames; no annotated
    object shows there, every one shows before, and the background changes at both cuts."""
    clips = EventVideos(seed=7, length=2, num_frames=40, size=SIZE, max_objects=4, assets="heldout",
                        config=CUT_EVENTS)
    for item in (clips[0], clips[1]):
        areas = _areas(item)
        assert [e["kind"] for e in item["events"]] == ["cut"] * item["num_objects"]
        start, end = item["events"][0]["start"], item["events"][0]["end"]
        assert all((e["start"], e["end"]) == (start, end) for e in item["events"])
        assert 0 < start < end < 40
        assert not areas[:, start:end].any() and areas[:, start - 1].all()
        assert areas[:, end:].any(1).all()  # every object is back after the cut back
        frames = item["frames"]
        jump = (frames[1:] - frames[:-1]).abs().mean((1, 2, 3))
        assert jump[start - 1] > 2 * jump[: start - 1].median() and jump[end - 1] > 2 * jump[start:end - 1].median()


def test_the_occluder_is_not_annotated_and_hides_its_target_completely(long_items) -> None:
    for item in long_items:
        occlusion = next(e for e in item["events"] if e["kind"] == "occlusion")
        track = _areas(item)[occlusion["object"] - 1]
        hidden = track[occlusion["start"]: occlusion["end"]] == 0
        assert hidden.sum() >= 2
        assert int(item["masks"].max()) <= item["num_objects"]  # the occluder is background


def test_items_are_pure_functions_of_seed_index_and_skip() -> None:
    clips = EventVideos(seed=2, length=5, num_frames=6, size=SIZE)
    a, b = clips[ClipKey(1, 4)], clips[ClipKey(1, 4)]
    assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["masks"], b["masks"])
    assert a["times"].tolist() == b["times"].tolist()
    gaps = np.diff(a["times"].numpy())
    assert a["times"][0] == 0 and (gaps >= 1).all() and (gaps <= 4).all()
    assert clips[1]["times"].tolist() == list(range(6))  # a plain index: consecutive frames


def test_synthetic_clips_skip_frames_too() -> None:
    clips = SyntheticVideos(seed=1, length=3, num_frames=4, size=SIZE)
    consecutive, skipping = clips[ClipKey(0, 1)], clips[ClipKey(0, 6)]
    assert torch.equal(consecutive["frames"], clips[0]["frames"])  # max_skip 1 is the plain clip
    assert consecutive["frames"].shape == skipping["frames"].shape
    assert not torch.equal(consecutive["frames"][1:], skipping["frames"][1:])


def test_crowds_are_look_alikes_with_only_some_annotated() -> None:
    config = replace(TRAIN_EVENTS, p_crowd=1.0, p_occlusion=0.0, p_exit=0.0, p_twins=0.0, objects=(2, 2),
                     crowd=(6, 6))
    item = EventVideos(seed=3, length=1, num_frames=2, size=(192, 256), max_objects=2, config=config)[0]
    assert item["num_objects"] <= 2
    # Six look-alikes, of which at most two annotated: much of what moves is left as background.
    moving = (item["frames"][0] - item["frames"][1]).abs().sum(0) > 0.05
    assert moving.sum() > (item["masks"][1] > 0).sum()


@pytest.mark.parametrize("event", ["occlusion", "exit"])
def test_a_decoy_moves_beside_the_object_until_it_goes_and_stays_in_view(event: str) -> None:
    """An unannotated look-alike (the object's shape kind, about its size) touches the object up to the
    moment it goes, occluded (and beside it all along) or out of view (and then still in the frame)."""
    config = replace(TRAIN_EVENTS, p_decoy=1.0, p_crowd=0.0, p_twins=0.0, p_fast=0.0, p_scale=0.0, objects=(1, 1),
                     p_occlusion=float(event == "occlusion"), p_exit=float(event == "exit"))
    size, span = (240, 320), 40
    for seed in range(3):
        scene, events = plan_events(np.random.default_rng(seed), asset_bank("train"), config, span, size, 1)
        (away,) = events
        target = next(o for o in scene.objects if o.label == 1)
        behind = scene.objects[:len(scene.objects) - scene.front]  # not the occluder
        decoys = [o for o in behind if o.label == 0 and o.shape == target.shape]
        assert len(decoys) == 1, [o.shape for o in scene.objects]
        decoy = decoys[0]
        gap = np.linalg.norm(decoy.poses[:, :2] - target.poses[:, :2], axis=1)
        size_ratio = math.exp(2 * (decoy.poses[0, 3] - target.poses[0, 3])) * float(decoy.sprite[3].sum()) / float(
            target.sprite[3].sum())
        assert 0.7 < size_ratio < 1.4
        before = away.start - 1
        assert gap[before] < 0.5 * math.sqrt(size[0] * size[1])  # beside it as it goes
        if event == "exit":  # a path in frame pixels
            x, y = decoy.poses[(away.start + away.end) // 2, :2]
            assert 0 <= x <= size[1] and 0 <= y <= size[0]  # in view while the object is away
        else:  # a path in the first frame's pixels, beside the object all along
            assert np.allclose(gap, gap[0] * np.exp(target.poses[:, 3] - target.poses[0, 3]), rtol=0.3)


def test_the_benchmark_configs_have_no_decoy_so_their_clips_stay_as_they_were() -> None:
    assert LONG_EVENTS.p_decoy == CUT_EVENTS.p_decoy == 0.0 < TRAIN_EVENTS.p_decoy


def test_make_dataset_knows_events() -> None:
    data = make_dataset("events:2+synthetic", length=10, num_frames=3, size=SIZE)
    item = data[ClipKey(0, 3)]
    assert item["frames"].shape == (3, 3, *SIZE)
