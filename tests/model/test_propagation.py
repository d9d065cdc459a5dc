"""Local propagation: a windowed softmax over the previous frame, equal to a naive loop over patches."""
import pytest
import torch

from stma_cli.model.propagation import (LocalPropagation, MemoryMatching, connected_parts, encoder_keys, given_match,
                                        given_votes, part_counts, shot_continuity, stray_parts,
                                        shown_share, window_similarity)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def naive_prior(module, keys, previous_keys, coverage):
    """For each patch: softmax of the similarities to the previous frame's patches within the window."""
    b, d, h, w = keys.shape
    r, scale = module.radius, module.log_temperature.exp()
    prior = torch.zeros(b, coverage.shape[1], h, w)
    for y in range(h):
        for x in range(w):
            ys = range(max(0, y - r), min(h, y + r + 1))
            xs = range(max(0, x - r), min(w, x + r + 1))
            near = [(j, i) for j in ys for i in xs]
            sims = torch.stack([(keys[:, :, y, x] * previous_keys[:, :, j, i]).sum(1) for j, i in near], 1) * scale
            weights = sims.softmax(1)
            values = torch.stack([coverage[:, :, j, i] for j, i in near], 2)
            prior[:, :, y, x] = (values * weights[:, None]).sum(2)
    return prior


def test_matches_a_naive_window_loop():
    module = LocalPropagation(dim=16, key_dim=8, radius=2)
    keys = module.keys(torch.randn(2, 5 * 7, 16), (5, 7))
    previous = module.keys(torch.randn(2, 5 * 7, 16), (5, 7))
    coverage = torch.rand(2, 3, 5, 7).softmax(1)
    torch.testing.assert_close(module(keys, previous, coverage), naive_prior(module, keys, previous, coverage))


def test_follows_a_shift_within_the_window():
    """A frame whose patches all moved one patch right carries the masks one patch right."""
    module = LocalPropagation(dim=16, key_dim=16, radius=1)
    with torch.no_grad():
        module.log_temperature.fill_(8.0)  # nearly a hard match
    tokens = torch.randn(1, 6, 8, 16)
    shifted = torch.roll(tokens, shifts=1, dims=2)
    coverage = torch.zeros(1, 2, 6, 8)
    coverage[:, 1, 2:4, 2:4] = 1
    coverage[:, 0] = 1 - coverage[:, 1]
    prior = module(module.keys(shifted.flatten(1, 2), (6, 8)), module.keys(tokens.flatten(1, 2), (6, 8)), coverage)
    expected = torch.roll(coverage, shifts=1, dims=3)
    torch.testing.assert_close(prior[..., 1:], expected[..., 1:], atol=1e-3, rtol=0)


def test_log_prior_of_a_present_object_multiplies_probabilities_by_the_prior():
    module = LocalPropagation(dim=16, key_dim=8, radius=1)
    with torch.no_grad():
        module.log_floor.fill_(-30.0)  # no floor
        module.log_tau.fill_(-30.0)  # every object present in the previous frame gets the full prior
    prior = torch.rand(1, 3, 4, 4).softmax(1)
    logits = torch.randn(1, 3, 4, 4)
    gate = module.gate(prior)
    torch.testing.assert_close(gate, torch.ones(1, 3))
    combined = (logits + module.log_prior(prior, gate, 1)).softmax(1)
    product = logits.softmax(1) * prior
    torch.testing.assert_close(combined, product / product.sum(1, keepdim=True))
    assert module.log_prior(prior, gate, 4).shape == (1, 3, 16, 16)


def test_an_object_absent_from_the_previous_frame_gets_no_prior():
    """Gate 0, so its log-prior is 0 everywhere: nothing vetoes finding it again."""
    module = LocalPropagation(dim=16, key_dim=8, radius=1)
    coverage = torch.zeros(1, 3, 4, 4)
    coverage[:, 1, 1:3, 1:3] = 1.0  # object 1 present, object 2 absent
    coverage[:, 0] = 1 - coverage[:, 1]
    gate = module.gate(coverage)
    assert gate[0, 0] == 1 and gate[0, 1] > 0.8 and gate[0, 2] == 0
    log_prior = module.log_prior(coverage, gate, 1)
    assert (log_prior[:, 2] == 0).all()
    assert log_prior[0, 1, 0, 0] < -3  # the present object keeps its veto far from where it was


def test_memory_matching_finds_an_object_anywhere_in_the_frame():
    """The readout of a patch is the coverage of the memory patch it matches, however far it moved."""
    matching = MemoryMatching()
    with torch.no_grad():
        matching.log_temperature.fill_(6.0)  # nearly a hard match
    propagation = LocalPropagation(dim=16, key_dim=16, radius=1)
    tokens = torch.randn(1, 6, 8, 16)
    moved = torch.roll(tokens, shifts=(3, 5), dims=(1, 2))  # far beyond any local window
    coverage = torch.zeros(1, 2, 6, 8)
    coverage[:, 1, 1, 1] = 1
    coverage[:, 0] = 1 - coverage[:, 1]
    keys = propagation.keys(moved.flatten(1, 2), (6, 8))
    memory_keys = propagation.keys(tokens.flatten(1, 2), (6, 8))
    other_keys = propagation.keys(torch.randn(1, 6 * 8, 16), (6, 8))  # a second memory frame, unlike this one
    other_coverage = torch.zeros_like(coverage)
    other_coverage[:, 0] = 1
    readout = matching(keys, [memory_keys, other_keys], [coverage, other_coverage])
    assert readout[0, 1, 4, 6] > 0.9  # (1, 1) moved by (3, 5)
    assert readout[0, 1].sum() < 1.2
    torch.testing.assert_close(readout.sum(1), torch.ones(1, 6, 8))


def test_memory_matching_log_prior_is_gated_and_spares_the_background():
    matching = MemoryMatching()
    readout = torch.rand(1, 3, 4, 4).softmax(1)
    assert (matching.log_prior(readout, torch.zeros(1, 2), 2) == 0).all()
    log_prior = matching.log_prior(readout, torch.tensor([[1.0, 0.0]]), 1)
    assert log_prior.shape == (1, 3, 4, 4)
    assert (log_prior[:, 0] == 0).all() and (log_prior[:, 2] == 0).all()  # background; object with gate 0
    torch.testing.assert_close(log_prior[:, 1], torch.log(readout[:, 1] + 1e-2))


def test_memory_matching_top_k_reads_only_the_best_matches():
    """With k at least the memory's size it is the full softmax; with k = 1, each patch copies the
    coverage of its single best match."""
    keys = torch.nn.functional.normalize(torch.randn(1, 8, 3, 4), dim=1)
    memory_keys = [torch.nn.functional.normalize(torch.randn(1, 8, 3, 4), dim=1) for _ in range(2)]
    coverages = [torch.rand(1, 3, 3, 4).softmax(1) for _ in range(2)]
    full = MemoryMatching()(keys, memory_keys, coverages)
    torch.testing.assert_close(MemoryMatching(top_k=24)(keys, memory_keys, coverages), full)
    one = MemoryMatching(top_k=1)(keys, memory_keys, coverages)
    similarity = keys.flatten(2)[0].T @ torch.cat([k.flatten(2)[0] for k in memory_keys], 1)  # (12, 24)
    values = torch.cat([c.flatten(2)[0] for c in coverages], 1)  # (3, 24)
    torch.testing.assert_close(one[0].flatten(1), values[:, similarity.argmax(1)])


def test_encoder_keys_are_unit_length_and_keep_both_strides():
    f8, f16 = torch.randn(2, 32, 8, 10), torch.randn(2, 96, 4, 5)
    keys = encoder_keys(f8, f16)
    assert keys.shape == (2, 128, 4, 5)
    torch.testing.assert_close(keys.norm(dim=1), torch.ones(2, 4, 5))
    torch.testing.assert_close(keys[:, 32:] * 2**0.5, torch.nn.functional.normalize(f16, dim=1))


def test_shot_continuity_is_high_within_a_shot_and_low_across_a_cut():
    frame = torch.nn.functional.normalize(torch.randn(1, 16, 6, 8), dim=1)
    moved = torch.roll(frame, shifts=(1, 2), dims=(2, 3))  # within the search radius
    other = torch.nn.functional.normalize(torch.randn(1, 16, 6, 8), dim=1)
    assert shot_continuity(window_similarity(moved, frame, 2)) > 0.7  # the rolled-in border matches less well
    assert shot_continuity(window_similarity(frame, frame, 2)) == pytest.approx(1.0)
    assert shot_continuity(window_similarity(other, frame, 2)) < 0.7


def test_shown_share_counts_the_patches_that_match_an_object_in_memory():
    """Object 1 covers 6 patches of the previous frame; the new frame shows 3 of them again (anywhere, and in
    another memory frame than the previous one) and nothing else of it: share 0.5. Object 2 is not in the
    new frame: share 0. Object 3 is not in the previous frame: NaN, nothing to carry."""
    memory = torch.nn.functional.normalize(torch.randn(1, 32, 4, 6), dim=1)
    previous_keys = torch.nn.functional.normalize(torch.randn(1, 32, 4, 6), dim=1)
    coverage = torch.zeros(1, 3, 4, 6)
    coverage[:, 0, 0, :3] = coverage[:, 0, 1, :3] = 1  # object 1: 6 patches, in the older memory frame
    coverage[:, 1, 3, 2:5] = 1  # object 2
    coverage[:, 2, 2, 5] = 1  # object 3, seen only in the older frame
    previous = coverage.clone()
    previous[:, 2] = 0
    frame = torch.nn.functional.normalize(torch.randn(1, 32, 4, 6), dim=1)
    frame[:, :, 3, 3:] = memory[:, :, 0, :3]  # three of object 1's patches, elsewhere in the frame
    share = shown_share(frame, [memory, previous_keys], [coverage, torch.zeros_like(coverage)], previous, 0.9)
    assert share[0, 0] == pytest.approx(0.5) and share[0, 1] == 0 and torch.isnan(share[0, 2])


def test_given_match_is_the_share_of_an_objects_patches_that_match_its_own_given_patches():
    """On the given frame, object 1 covers 6 patches and object 2 four. On the new frame, object 1's mask holds
    three of its own patches and one of the background's: 0.75. Object 2's mask lies wholly on background
    patches (where it stood before it left): 0. Object 3 has no patch on the new frame, and object 4 too few
    given patches to judge: NaN."""
    given, coverage = torch.nn.functional.normalize(torch.randn(1, 32, 5, 8), dim=1), torch.zeros(1, 5, 5, 8)
    coverage[:, 1, 0, :3] = coverage[:, 1, 1, :3] = 1
    coverage[:, 2, 4, :4] = 1
    coverage[:, 3, 2, 7] = 1
    coverage[:, 4, 4, 7] = 1
    coverage[:, 0] = 1 - coverage[:, 1:].sum(1)
    frame = torch.nn.functional.normalize(torch.randn(1, 32, 5, 8), dim=1)
    patches = torch.zeros(1, 4, 5, 8, dtype=torch.bool)
    frame[:, :, 2, :3] = given[:, :, 0, :3]  # three of object 1's patches, moved down
    frame[:, :, 2, 3] = given[:, :, 2, 5]  # and a background patch
    patches[:, 0, 2, :4] = True
    frame[:, :, 0, 5:7] = given[:, :, 1, 5:7]  # object 2's mask on two background patches
    patches[:, 1, 0, 5:7] = True
    patches[:, 3, 1, 7] = True

    def share(objects=(True,) * 4, **rule):
        return given_match(frame, [given], [coverage], [torch.tensor([objects])], patches.flatten(2),
                           **{"least": 1, "alike": 1.0, **rule})[0]

    assert share()[0] == pytest.approx(0.75) and share()[1] == 0
    assert torch.isnan(share()[2]) and share()[3] == 0
    assert torch.isnan(share(least=2)[3])
    # A frame whose mask of object 2 was predicted, not given, does not vouch for it (nor against it).
    predicted = (True, False, True, True)
    assert torch.isnan(share(objects=predicted)[1]) and share(objects=predicted)[0] == pytest.approx(0.75)
    # A look-alike of object 2 stands apart from it on the given frame: the given frame cannot vouch for it.
    given[:, :, 2, 4:6] = given[:, :, 4, 1:3]
    assert share()[1] == 0 and torch.isnan(share(alike=0.6)[1]) and not torch.isnan(share(alike=0.6)[0])


def test_given_votes_mark_each_patch_and_given_match_is_their_mean():
    """Each patch of an object's mask votes 1 where its best match on the given frame is one of the object's own
    patches and 0 where it is not; patches off the mask, and objects the given frame cannot judge, are NaN."""
    given = torch.nn.functional.normalize(torch.randn(1, 16, 4, 4), dim=1)
    coverage = torch.zeros(1, 3, 4, 4)
    coverage[:, 1, :2, :2] = 1  # object 1: four patches
    coverage[:, 2, 3, 3] = 1  # object 2: one patch, under `least`
    coverage[:, 0] = 1 - coverage[:, 1:].sum(1)
    frame = given.clone()
    patches = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    patches[:, 0, :2, :2] = patches[:, 0, 3, 0] = True  # its own place, and a background patch
    patches[:, 1, 3, 3] = True
    votes = given_votes(frame, [given], [coverage], [torch.tensor([[True, True]])], patches.flatten(2), 2, 1.0)
    assert votes[0, 0].view(4, 4)[:2, :2].eq(1).all() and votes[0, 0].view(4, 4)[3, 0] == 0
    assert votes[0, 0].isnan().sum() == 11 and votes[0, 1].isnan().all()
    share = given_match(frame, [given], [coverage], [torch.tensor([[True, True]])], patches.flatten(2), 2, 1.0)
    assert share[0, 0] == pytest.approx(0.8) and share[0, 1].isnan()


def test_connected_parts_join_cells_that_touch_at_a_side_or_a_corner():
    mask = torch.tensor([[1, 1, 0, 0, 1],
                         [0, 0, 1, 0, 1],
                         [0, 0, 0, 0, 0],
                         [1, 0, 0, 1, 1]], dtype=torch.bool)
    numbers = connected_parts(mask)
    assert (numbers == 0).eq(~mask).all() and part_counts(numbers) == 4
    assert part_counts(connected_parts(torch.ones(2, 3, 3, dtype=torch.bool))).tolist() == [1, 1]
    assert part_counts(connected_parts(torch.zeros(3, 3, dtype=torch.bool))) == 0
    part = {cell: int(numbers[cell]) for cell in [(0, 0), (0, 1), (1, 2), (0, 4), (1, 4), (3, 0), (3, 3), (3, 4)]}
    assert part[(0, 0)] == part[(0, 1)] == part[(1, 2)]  # a corner joins
    assert part[(0, 4)] == part[(1, 4)] and part[(3, 3)] == part[(3, 4)]
    assert len({part[(0, 0)], part[(0, 4)], part[(3, 0)], part[(3, 3)]}) == 4


def test_stray_parts_are_the_parts_apart_from_the_largest_that_the_given_frames_do_not_vouch_for():
    """Object 1: a large part that no patch vouches for stays (the largest part always does); of its two small
    parts, the one under `share` goes, the one at it stays. Object 2: votes NaN (not judged), nothing goes."""
    parts = torch.zeros(1, 2, 6, 6, dtype=torch.bool)
    votes = torch.full((1, 2, 36), torch.nan)
    view = votes.view(1, 2, 6, 6)
    parts[0, 0, :3, :3] = True
    view[0, 0, :3, :3] = 0.0
    parts[0, 0, 5, 4:6] = True
    view[0, 0, 5, 4:6] = torch.tensor([0.0, 1.0])  # half its patches vouched for
    parts[0, 0, 0, 5] = True
    view[0, 0, 0, 5] = 0.0
    parts[0, 1, :2, :2] = parts[0, 1, 4, 4] = True
    stray = stray_parts(connected_parts(parts), votes, 0.5)
    assert stray[0, 0, 0, 5] and stray[0, 0].sum() == 1
    assert not stray[0, 1].any()
    assert stray_parts(connected_parts(parts), votes, 0.6)[0, 0].sum() == 3  # now the half-vouched part goes too


def test_window_similarity_is_unfold_of_the_previous_keys():
    """The same numbers, in the same window order, as unfolding the previous keys around each patch (zero
    padding outside the frame)."""
    keys = torch.nn.functional.normalize(torch.randn(2, 8, 5, 7), dim=1)
    previous = torch.nn.functional.normalize(torch.randn(2, 8, 5, 7), dim=1)
    for radius in (1, 3):
        size = 2 * radius + 1
        windows = torch.nn.functional.unfold(previous, size, padding=radius).view(2, 8, size * size, 35)
        expected = (keys.flatten(2)[:, :, None] * windows).sum(1)
        torch.testing.assert_close(window_similarity(keys, previous, radius), expected)


def test_window_tables_made_in_inference_mode_serve_training_too():
    """The cached window tables of a grid first seen under inference mode (validation during training) are
    used by a later training step on the same grid, where autograd saves them for backward."""
    keys = torch.nn.functional.normalize(torch.randn(1, 8, 6, 9), dim=1)
    with torch.inference_mode():
        window_similarity(keys, keys, 2)
    trained = keys.clone().requires_grad_(True)
    window_similarity(trained, keys, 2).sum().backward()
    assert trained.grad is not None and torch.isfinite(trained.grad).all()
