"""Refinement: label propagation from the given masks adds thin parts near an object's mask, and does nothing else."""
import math

import pytest
import torch
import torch.nn.functional as F

from stma_cli.model.refinement import FineMemory, _propagate, fine_keys, fine_labels, refine, thin_parts

H8, W8 = 12, 16  # the stride-8 grid of a 96x128 frame


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _keys(channels: int = 16) -> torch.Tensor:
    """Random unit keys (1, C, H8, W8): each cell looks like itself only."""
    return F.normalize(torch.randn(1, channels, H8, W8), dim=1)


def _logits(labels: torch.Tensor, objects: int) -> torch.Tensor:
    """Sure stride-4 logits (1, 1+n, 2*H8, 2*W8) of a label map at stride 4."""
    return F.one_hot(labels, objects + 1).permute(2, 0, 1)[None].float() * 20


def _given(keys: torch.Tensor, masks: torch.Tensor) -> FineMemory:
    """A frame with given object masks at full size (1, n, 8*H8, 8*W8)."""
    labels = fine_labels(masks)
    return FineMemory(labels, keys, thin_parts(labels))


def _frame_with_a_rod() -> tuple[torch.Tensor, torch.Tensor]:
    """Masks (1, 1, 96, 128) of a block with a rod 8 px wide below it, and the block alone at stride 4."""
    mask = torch.zeros(1, 1, 8 * H8, 8 * W8)
    mask[..., 16:40, 32:72] = 1  # block: cells (2..4, 4..8)
    mask[..., 40:88, 48:56] = 1  # rod: one cell wide, cells (5..10, 6)
    block = torch.zeros(2 * H8, 2 * W8, dtype=torch.long)
    block[4:10, 8:18] = 1
    return mask, block


def test_a_thin_part_the_network_drops_comes_back_near_the_mask_and_is_kept_on():
    keys = _keys()
    mask, block = _frame_with_a_rod()
    rod = (F.avg_pool2d(mask, 4)[0, 0] > 0) & (block == 0)
    logits = _logits(block, 1)
    refined = refine(logits, keys, [_given(keys, mask)], None, radius=4, band=1)
    grown = (refined.argmax(1)[0] == 1) & (block == 0)
    assert torch.equal(refined[..., ~grown], logits[..., ~grown])  # other pixels keep the network's logits
    assert torch.equal(grown, rod & (torch.arange(2 * H8)[:, None] < 12))  # the rod's first cell: one band beyond
    previous = fine_labels(mask)  # the previous frame kept the whole rod
    refined = refine(_logits(block, 1), keys, [_given(keys, mask)], previous, radius=4, band=1).argmax(1)[0]
    assert torch.equal(refined == 1, (block == 1) | rod)


def test_a_part_narrower_than_a_cell_keeps_its_place_in_the_cell():
    keys = _keys()
    mask, block = _frame_with_a_rod()
    mask[..., 40:88, 52:56] = 0  # the rod now 4 px wide: the left half of its cells
    refined = refine(_logits(block, 1), keys, [_given(keys, mask)], fine_labels(mask), radius=4, band=1).argmax(1)[0]
    grown = (refined == 1) & (block == 0)
    assert grown[10:22, 12].all() and not grown[:, 13].any()


def test_only_thin_parts_are_read_so_a_shrunken_object_keeps_its_outline():
    keys = _keys()
    mask, block = _frame_with_a_rod()
    given = fine_labels(mask)
    assert torch.equal(thin_parts(given)[0, 1] > 0, (given[0, 1] > 0.5) & (block == 0))  # the rod, not the block
    shrunk = torch.zeros_like(block)
    shrunk[5:9, 9:17] = 1  # the block, one stride-4 pixel in from its given outline on every side
    refined = refine(_logits(shrunk, 1), keys, [_given(keys, mask)], given, radius=4, band=1).argmax(1)[0]
    assert not refined[block == 1][shrunk[block == 1] == 0].any()  # its given outline is not painted back
    assert (refined[(given[0, 1] > 0.5) & (block == 0)] == 1).all()  # the rod is


def test_pixels_are_added_only_where_the_matches_are_sure():
    mask, block = _frame_with_a_rod()
    unrelated = _given(_keys(), mask)  # the frame looks like nothing in memory: cosine near 0
    logits = _logits(block, 1)
    assert torch.equal(refine(logits, _keys(), [unrelated], fine_labels(mask), radius=4, band=1), logits)


def test_an_object_the_network_does_not_show_gets_nothing_and_others_keep_their_pixels():
    keys = _keys()
    mask, block = _frame_with_a_rod()
    two = torch.cat([mask, torch.zeros_like(mask)], 1)
    two[:, 1, :, 96:120] = 1  # object 2 on the right, given and on the previous frame
    labels = block.clone()
    labels[:, 24:30] = 1  # object 2 absent from this frame; object 1 holds the right edge instead
    refined = refine(_logits(labels, 2), keys, [_given(keys, two)], fine_labels(two), radius=4, band=1).argmax(1)[0]
    assert not (refined == 2).any()
    assert (refined[labels == 1] == 1).all()


def test_propagation_reads_only_within_the_radius():
    keys = _keys()
    labels = torch.zeros(2, H8, W8)
    labels[0] = 1
    labels[:, 0, 0], labels[1, 0, 0] = 0, 1  # an object at the top-left cell only
    far = torch.zeros(H8, W8, dtype=torch.bool)
    far[H8 - 1, W8 - 1] = True
    query = keys.clone()
    query[0, :, H8 - 1, W8 - 1] = keys[0, :, 0, 0]  # the far corner looks exactly like the object's cell
    read, match = _propagate(query[0], [(keys[0], labels)], far, radius=3)
    assert read[1].item() < 0.01 and match.item() < 0.99
    read, match = _propagate(query[0], [(keys[0], labels)], far, radius=H8 + W8)
    assert read[1].item() > 0.5 and match.item() > 0.9


def test_fine_keys_are_unit_length_and_keep_both_strides():
    f8, f16 = torch.randn(1, 8, H8, W8), torch.randn(1, 24, H8 // 2, W8 // 2)
    coarse = torch.cat([F.normalize(F.avg_pool2d(f8, 2), dim=1), F.normalize(f16, dim=1)], 1) * math.sqrt(0.5)
    keys = fine_keys(f8, coarse)
    assert keys.shape == (1, 32, H8, W8)
    torch.testing.assert_close(keys.norm(dim=1), torch.ones(1, H8, W8))
    torch.testing.assert_close(keys[:, :8] * math.sqrt(2), F.normalize(f8, dim=1))
