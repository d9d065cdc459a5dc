"""`Segmenter.step`: bounded memory, the user's masks returned exactly, objects added mid-stream, shapes."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stma_cli.errors import StmaError
from stma_cli.inference.segmenter import Segmenter, SegmenterConfig, processing_size
from stma_cli.model import STMA


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_memory_stays_bounded_over_200_frames(model):
    segmenter = Segmenter(model, SegmenterConfig(mem_size=4, mem_every=3))
    first = np.zeros((32, 32), np.uint8)
    first[4:16, 4:16] = 1
    later = np.zeros((32, 32), np.uint8)
    later[18:30, 18:30] = 2
    sizes = []
    for t in range(200):
        mask = first if t == 0 else later if t == 100 else None
        segmenter.step(noise(32, 32, seed=t % 7), mask)
        sizes.append(len(segmenter.memory))
        if t == 0:
            anchor = segmenter.memory.entries()[0]
    assert max(sizes) == 4
    assert segmenter.memory.entries()[0] is anchor  # the first annotated frame is never dropped
    assert segmenter.object_ids == [1, 2]


def test_the_users_mask_comes_back_exactly(model):
    # The model sees the frame at 48x64: thin lines and single pixels cannot survive its resolution.
    segmenter = Segmenter(model, SegmenterConfig(max_side=64))
    mask = np.zeros((96, 128), np.uint8)
    mask[10:50, 10:40] = 5
    mask[60, :] = 2
    mask[70:90:3, 100:120:2] = 2
    result = segmenter.step(noise(96, 128), mask)
    np.testing.assert_array_equal(result.labels, mask)
    assert result.object_ids == [2, 5]  # ids of one mask enter in increasing order

    result = segmenter.step(noise(96, 128, seed=1))
    assert set(np.unique(result.labels)) <= {0, 2, 5}

    new = np.zeros((96, 128), np.uint8)
    new[30:34, 60:90] = 9
    result = segmenter.step(noise(96, 128, seed=2), new)
    assert result.object_ids == [2, 5, 9]
    assert (result.labels[new == 9] == 9).all() and ((result.labels == 9) == (new == 9)).all()
    assert result.logits.shape[0] == 4


def test_frames_before_any_mask_are_background(model):
    segmenter = Segmenter(model)
    result = segmenter.step(noise(40, 56))
    assert not result.labels.any() and result.object_ids == []
    assert result.logits.shape == (1, 10, 14)
    assert segmenter.memory.empty


@pytest.mark.parametrize("size, max_side", [((90, 130), 0), ((300, 200), 120)])
def test_result_shapes(model, size, max_side):
    height, width = size
    mask = np.zeros(size, np.uint8)
    mask[: height // 2, : width // 2] = 3
    segmenter = Segmenter(model, SegmenterConfig(max_side=max_side))
    segmenter.step(noise(height, width), mask)
    result = segmenter.step(noise(height, width, seed=1))
    ph, pw = processing_size(height, width, max_side)
    assert result.labels.shape == size and result.labels.dtype == np.uint8
    assert result.logits.shape == (2, math.ceil(ph / 4), math.ceil(pw / 4))
    assert result.logits.dtype == torch.float32 and result.logits.device.type == "cpu"


def test_reset_forgets_everything(model):
    segmenter = Segmenter(model)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 1
    segmenter.step(noise(32, 32), mask)
    segmenter.reset()
    assert segmenter.object_ids == [] and segmenter.memory.empty
    assert not segmenter.step(noise(32, 32)).labels.any()


def test_bad_masks(model):
    segmenter = Segmenter(model)
    with pytest.raises(StmaError, match="mask of size 30x32 does not match the frame size 32x32"):
        segmenter.step(noise(32, 32), np.ones((32, 30), np.uint8))
    too_many = np.arange(64 * 64).reshape(64, 64) % (model.config.num_ids + 2)
    with pytest.raises(StmaError, match=f"at most {model.config.num_ids}"):
        segmenter.step(noise(64, 64), too_many.astype(np.uint8))


def test_processing_size():
    assert processing_size(480, 854, 640) == (360, 640)
    assert processing_size(480, 854, 0) == (480, 854)
    assert processing_size(100, 80, 640) == (100, 80)
    assert processing_size(10, 2000, 100) == (16, 100)


# -- ending objects ----------------------------------------------------------------------------------


def squares(ids: list[int], size: int = 96, cell: int = 16) -> np.ndarray:
    """A mask with object `ids[i]` in the i-th cell of a grid of `cell`-pixel squares."""
    mask = np.zeros((size, size), np.uint8)
    per_row = size // cell
    for i, object_id in enumerate(ids):
        y, x = divmod(i, per_row)
        mask[y * cell + 2 : (y + 1) * cell - 2, x * cell + 2 : (x + 1) * cell - 2] = object_id
    return mask


def test_removed_objects_leave_every_memory_frame(model):
    segmenter = Segmenter(model, SegmenterConfig(mem_size=3, mem_every=1))
    k = model.config.tokens_per_object
    segmenter.step(noise(96, 96), squares([1, 2, 3]))
    for t in range(1, 4):
        segmenter.step(noise(96, 96, seed=t))
    entries = segmenter.memory.entries()
    anchor_background = entries[0].coverage[:, 0] + entries[0].coverage[:, 2]
    segmenter.remove([2, 7])  # 7 is not tracked: ignored
    assert segmenter.object_ids == [1, 3]
    for entry in segmenter.memory.entries():
        assert entry.coverage.shape[1] == 3  # background, 1, 3
        assert all(objects.shape[1] == 2 * k for _, objects in entry.levels)
    torch.testing.assert_close(segmenter.memory.entries()[0].coverage[:, 0], anchor_background)
    result = segmenter.step(noise(96, 96, seed=9))
    assert result.object_ids == [1, 3] and result.logits.shape[0] == 3
    assert 2 not in np.unique(result.labels)


def test_objects_keep_their_id_table_entries_and_removal_frees_one(model):
    """32 objects fill the tiny model's ID table; ending one makes room for a new one, which takes the
    freed entry only because no entry was never used."""
    segmenter = Segmenter(model)
    assert model.config.num_ids == 32
    segmenter.step(noise(96, 96), squares(list(range(1, 33))))
    with pytest.raises(StmaError, match="33 objects at once, but the model's ID table holds at most 32"):
        segmenter.step(noise(96, 96, seed=1), squares([40]))
    table = dict(segmenter.table)
    segmenter.remove([5])
    assert segmenter.released == [table[5]]
    result = segmenter.step(noise(96, 96, seed=2), squares([40]))
    assert result.object_ids == [i for i in range(1, 33) if i != 5] + [40]
    assert segmenter.table[40] == table[5] and segmenter.released == []
    assert all(segmenter.table[i] == table[i] for i in table if i != 5)  # the others keep theirs


def test_a_removed_id_can_come_back_as_a_new_object(model):
    segmenter = Segmenter(model)
    segmenter.step(noise(96, 96), squares([1, 2]))
    old = segmenter.table[2]
    segmenter.remove([2])
    segmenter.step(noise(96, 96, seed=1))
    mask = np.zeros((96, 96), np.uint8)
    mask[60:90, 60:90] = 2
    result = segmenter.step(noise(96, 96, seed=2), mask)
    assert result.object_ids == [1, 2] and (result.labels[mask == 2] == 2).all()
    assert segmenter.table[2] != old  # an entry never used, not the one the old object's patches carry
    assert segmenter._table_ids().tolist() == [[segmenter.table[1], segmenter.table[2]]]


def test_removing_every_object_starts_afresh(model):
    segmenter = Segmenter(model)
    segmenter.step(noise(96, 96), squares([1, 2]))
    segmenter.remove(i for i in (1, 2))  # any iterable, a generator too
    assert segmenter.object_ids == [] and segmenter.memory.empty and segmenter.table == {}
    result = segmenter.step(noise(96, 96, seed=1))
    assert result.object_ids == [] and not result.labels.any()


def test_a_handed_over_model_is_not_copied(model):
    own = type(model)(model.config).eval()
    own.load_state_dict(model.state_dict())
    assert Segmenter(own, copy_model=False).model is own
    assert Segmenter(model).model is not model


@pytest.mark.parametrize(("mem_size", "mem_full", "pooled"), [(5, 4, 0), (9, 4, 4), (9, 0, 7)])
def test_working_frames_beyond_mem_full_are_pooled(model, mem_size, mem_full, pooled):
    """With --mem-every 1, memory holds the annotated frame, the working frames and the previous frame;
    all but the newest `mem_full` working frames are pooled (none at the default size)."""
    segmenter = Segmenter(model, SegmenterConfig(mem_size=mem_size, mem_every=1, mem_full=mem_full))
    first = np.zeros((48, 64), np.uint8)
    first[8:24, 8:24] = 1
    for t in range(12):
        segmenter.step(noise(48, 64, seed=t), first if t == 0 else None)
    entries = segmenter.memory.entries()
    assert len(entries) == mem_size
    assert sum(entry.pos is not None for entry in entries) == pooled
    assert entries[0].pos is None and entries[-1].pos is None  # the annotated and the previous frame stay whole


def test_an_object_the_given_frames_stop_vouching_for_is_dropped_after_given_frames(model, monkeypatch):
    """With `given_match`, object 1's mask is dropped from the third frame in a row whose share is under it, and
    stays dropped while nothing clears it (a frame without a mask to judge, NaN, neither counts nor clears);
    one frame that vouches for it brings it back. Object 2, always vouched for, keeps its mask."""
    from dataclasses import replace

    doubtful = STMA(replace(model.config, given_match=0.2, given_frames=3))
    doubtful.load_state_dict(model.state_dict())
    segmenter = Segmenter(doubtful.eval())
    shares = iter([0.1, 0.1, 0.1, float("nan"), 0.1, 0.9, 0.1])
    monkeypatch.setattr(type(segmenter.model), "given_match",
                        lambda self, features, memory, ids, logits: torch.tensor([[next(shares), 1.0]]))
    first = np.zeros((64, 64), np.uint8)
    first[:32, :32], first[32:, 32:] = 1, 2
    segmenter.step(noise(64, 64), first)
    dropped, presence = [], []
    for t in range(7):
        result = segmenter.step(noise(64, 64, seed=t))
        dropped.append(bool((result.logits[1] <= -1e3).all()))
        presence.append(float(result.presence[0]))
        assert not (result.logits[2] <= -1e3).all()
    assert dropped == [False, False, True, True, True, False, False]
    assert [p == 0 for p in presence] == dropped
    assert segmenter.doubted == {1: 1, 2: 0}
    segmenter.remove([1])
    assert segmenter.doubted == {2: 0}


@pytest.mark.parametrize("given_area, shown", [(1.0, [True, True, True, True, False, False]),
                                                (0.0, [True, False, False, False, False, False])])
def test_a_mask_as_large_as_the_given_one_is_not_judged_by_the_given_frames(model, monkeypatch, given_area, shown):
    """The given frames never vouch for object 1 (share 0.1, under 0.2). With `given_area` 1, its masks as large
    as its given mask (4x4 cells) are not judged, so it is dropped only on the second of the small (2x2) masks
    after them; without, on the second frame."""
    from dataclasses import replace

    doubtful = STMA(replace(model.config, given_match=0.2, given_frames=2, given_area=given_area))
    doubtful.load_state_dict(model.state_dict())
    segmenter = Segmenter(doubtful.eval())
    sides = iter([4, 4, 4, 2, 2, 2])

    def predict(self, features, memory, ids, valid=None):
        logits = torch.full((1, 2, 32, 32), -5.0)
        logits[0, 0] = 0.0
        side = next(sides)
        logits[0, 1, :side, :side] = 5.0
        return logits, torch.zeros(1, 1)

    monkeypatch.setattr(STMA, "predict", predict)
    monkeypatch.setattr(STMA, "given_match", lambda self, features, memory, ids, logits: torch.tensor([[0.1]]))
    first = np.zeros((128, 128), np.uint8)
    first[:16, :16] = 1  # cells 0..3 of the 32x32 logit grid
    segmenter.step(noise(128, 128), first)
    assert segmenter.given_area == {1: 16.0}
    assert [bool((segmenter.step(noise(128, 128, seed=t)).labels == 1).any()) for t in range(6)] == shown


@pytest.mark.parametrize("part_match, kept", [(0.2, False), (0.0, True)])
def test_a_part_apart_from_the_object_on_what_was_background_goes_to_the_background(model, monkeypatch,
                                                                                   part_match, kept):
    """The frame shows again the given frame. Object 1's mask covers its given place (16 patches) and, apart from
    it, one patch that was background there: with `part_match`, that part matches the background best on the given
    frame and goes to the background in the masks written, and the memory holds it as under half the object's; the
    largest part stays."""
    from dataclasses import replace

    judging = STMA(replace(model.config, part_match=part_match, given_alike=0.999))
    judging.load_state_dict(model.state_dict())
    segmenter = Segmenter(judging.eval())

    def predict(self, features, memory, ids, valid=None):
        logits = torch.full((1, 2, 32, 32), -5.0)
        logits[0, 0] = 0.0
        logits[0, 1, :16, :16] = logits[0, 1, 24:28, 24:28] = 5.0  # the given place, and patch (6, 6)
        return logits, torch.zeros(1, 1)

    monkeypatch.setattr(STMA, "predict", predict)
    first = np.zeros((128, 128), np.uint8)
    first[:64, :64] = 1
    segmenter.step(noise(128, 128), first)
    labels = segmenter.step(noise(128, 128)).labels
    assert (labels[:60, :60] == 1).all()  # away from the borders, which the upsampling rounds
    assert (labels[98:110, 98:110] == 1).all() == kept and (labels[88:120, 88:120] != 1).all() != kept
    remembered = segmenter.memory.entries()[-1].coverage_of(segmenter._table_ids(), torch.float32)[0, 1]
    assert (remembered[6, 6] > 0.9 if kept else remembered[6, 6] < 0.5) and (remembered[:4, :4] > 0.9).all()


def test_an_objects_mask_is_searched_for_near_its_last_mask_until_window_frames_pass_without_one(model, monkeypatch):
    """With `window_frames` 3, a mask of object 1 that the model puts far from its last mask (a look-alike in
    the opposite corner) is dropped, with presence 0, on the 3 frames after its last mask; from the fourth the
    whole frame is searched again and the far mask stands. A mask that moves a little each frame is kept."""
    from dataclasses import replace

    windowed = STMA(replace(model.config, window_frames=3, window_margin=1.0, window_growth=0.5))
    windowed.load_state_dict(model.state_dict())
    segmenter = Segmenter(windowed.eval())
    corners = iter([(28, 28)] * 5 + [(0, 2), (0, 4), (0, 6)])  # top-left cell of object 1 on the 32x32 grid

    def predict(self, features, memory, ids, valid=None):
        logits = torch.zeros(1, 2, 32, 32)
        logits[0, 1] = -5.0
        top, left = next(corners)
        logits[0, 1, top:top + 4, left:left + 4] = 5.0
        return logits, torch.zeros(1, 1)

    monkeypatch.setattr(STMA, "predict", predict)
    first = np.zeros((128, 128), np.uint8)
    first[:16, :16] = 1  # cells 0..3 of the 32x32 logit grid
    segmenter.step(noise(128, 128), first)
    shown = []
    for t in range(5):
        result = segmenter.step(noise(128, 128, seed=t))
        shown.append(bool((result.labels == 1).any()))
        assert (result.presence[0] == 0) == (not shown[-1])
    assert shown == [False, False, False, True, True]
    segmenter.reset()
    segmenter.step(noise(128, 128), first)
    for t in range(3):  # 2 cells (8 px) a frame: within the window
        assert (segmenter.step(noise(128, 128, seed=t)).labels[2:14, 8 * t + 10:8 * t + 22] == 1).all()
    assert segmenter.last_seen[1].box == (0, 6, 3, 9)


def test_a_partly_hidden_object_keeps_its_size_and_a_cut_opens_the_whole_frame(model, monkeypatch):
    """The window keeps the object's size while its mask shrinks to a sliver (hidden behind something), so the
    object found again beside what hid it stands; across a cut (`STMA.starts_shot`) every window is dropped."""
    from dataclasses import replace

    windowed = STMA(replace(model.config, window_frames=3, window_margin=2.0, window_growth=0.5))
    windowed.load_state_dict(model.state_dict())
    segmenter = Segmenter(windowed.eval())
    boxes = iter([(0, 0, 1), (6, 0, 4), (28, 28, 4), (28, 28, 4)])  # top, left, side on the 32x32 grid
    cuts = iter([False, False, False, True])

    def predict(self, features, memory, ids, valid=None):
        logits = torch.full((1, 2, 32, 32), -5.0)
        logits[0, 0] = 0.0
        top, left, side = next(boxes)
        logits[0, 1, top:top + side, left:left + side] = 5.0
        return logits, torch.zeros(1, 1)

    monkeypatch.setattr(STMA, "predict", predict)
    monkeypatch.setattr(STMA, "starts_shot", lambda self, features, memory: torch.tensor([next(cuts)]))
    first = np.zeros((128, 128), np.uint8)
    first[:16, :16] = 1  # 4x4 cells
    segmenter.step(noise(128, 128), first)
    areas = [int((segmenter.step(noise(128, 128, seed=t)).labels == 1).sum()) for t in range(4)]
    assert areas[0] > 0 and segmenter.last_seen[1].size == 4.0  # the sliver: one cell, the size stays 4
    assert areas[1] > 200  # 6 to 9 cells below the sliver: within 4 x (2 + 0.5) cells of it, not within 1 x 2.5
    assert areas[2] == 0  # the far corner, on the next frame: outside the window
    assert areas[3] > 200  # the same after a cut


def test_a_speck_of_an_object_gets_no_mask_until_its_mask_is_given_again(model, monkeypatch):
    """With `speck_share` 0.1, a mask under a tenth of the largest area the object's masks have had since its
    mask was given is dropped (presence 0, the background takes its pixels, in the logits too); a larger one
    stands, and a new given mask sets the scale again."""
    from dataclasses import replace

    specked = STMA(replace(model.config, speck_share=0.1))
    specked.load_state_dict(model.state_dict())
    segmenter = Segmenter(specked.eval())
    sides = iter([4, 1, 2, 1, 1])  # side of object 1's square on the 32x32 grid, one per predicted frame

    def predict(self, features, memory, ids, valid=None):
        logits = torch.full((1, 2, 32, 32), -5.0)
        logits[0, 0] = 0.0
        side = next(sides)
        logits[0, 1, 8:8 + side, 8:8 + side] = 5.0
        return logits, torch.zeros(1, 1)

    monkeypatch.setattr(STMA, "predict", predict)
    first = np.zeros((128, 128), np.uint8)
    first[32:48, 32:48] = 1  # 4x4 cells: 16
    segmenter.step(noise(128, 128), first)
    results = [segmenter.step(noise(128, 128, seed=t)) for t in range(3)]
    areas = [int((r.labels == 1).sum()) for r in results]  # 16 cells of 16 px, 1 (under 1.6), 4
    assert areas[0] > 200 and areas[1] == 0 and areas[2] > 40
    assert results[1].presence[0] == 0 and results[1].logits.argmax(0).max() == 0
    small = np.zeros((128, 128), np.uint8)
    small[32:36, 32:36] = 1  # a given mask of one cell: the scale starts again from it
    segmenter.step(noise(128, 128), small)
    assert (segmenter.step(noise(128, 128, seed=5)).labels == 1).sum() > 0
