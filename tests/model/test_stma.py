"""The STMA network: shapes, objects as a set, Hub serialisation."""
from dataclasses import replace

import pytest
import torch

from stma_cli.model import STMA, STMAConfig, soft_aggregate
from stma_cli.model.tokens import ObjectTokenizer, visibility


@pytest.fixture(scope="module")
def model() -> STMA:
    torch.manual_seed(0)
    return STMA(STMAConfig.preset("tiny")).eval()


def _inputs(n_objects: int, size=(64, 80), refs: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, *size, generator=g)
    ref_images = torch.rand(1, refs, 3, *size, generator=g)
    labels = torch.randint(0, n_objects + 1, (1, refs, *size), generator=g)
    ref_masks = torch.stack([(labels == j + 1).float() for j in range(n_objects)], dim=2)
    ids = torch.randperm(32, generator=g)[:n_objects][None] + 1
    return image, ref_images, ref_masks, ids


@pytest.mark.parametrize("n_objects", [1, 2, 20])
def test_output_shapes(model, n_objects):
    image, ref_images, ref_masks, ids = _inputs(n_objects, size=(50, 70))
    with torch.inference_mode():
        logits = model(image, ref_images, ref_masks, ids)
    assert logits.shape == (1, n_objects + 1, 50, 70)
    probs = soft_aggregate(logits)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 50, 70))


def test_objects_are_a_set(model):
    image, ref_images, ref_masks, ids = _inputs(3)
    perm = torch.tensor([2, 0, 1])
    with torch.inference_mode():
        logits = model(image, ref_images, ref_masks, ids)
        permuted = model(image, ref_images, ref_masks[:, :, perm], ids[:, perm])
    torch.testing.assert_close(permuted[:, 1:], logits[:, 1:][:, perm], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(permuted[:, :1], logits[:, :1], rtol=1e-4, atol=1e-4)


def test_padded_objects_do_not_change_real_ones(model):
    image, ref_images, ref_masks, ids = _inputs(2)
    padded_masks = torch.cat([ref_masks, torch.zeros_like(ref_masks[:, :, :1])], dim=2)
    padded_ids = torch.cat([ids, torch.full_like(ids[:, :1], 7)], dim=1)
    valid = torch.tensor([[True, True, False]])
    with torch.inference_mode():
        reference = model(image, ref_images, ref_masks, ids)
        memory = [model.memorize(model.encode(ref_images[:, i]), padded_masks[:, i], padded_ids, valid)
                  for i in range(ref_images.shape[1])]
        features = model.encode(image)
        logits = model.segment(features, memory, padded_ids, valid)
    from stma_cli.model import upsample_logits
    torch.testing.assert_close(upsample_logits(logits, features.size)[:, :3], reference, rtol=1e-4, atol=1e-4)
    assert (logits[:, 3] < -1e3).all()


def test_save_and_load_pretrained_is_bit_exact(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors"} <= {p.name for p in tmp_path.iterdir()}
    loaded = STMA.from_pretrained(tmp_path).eval()
    assert loaded.config == model.config
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    image, ref_images, ref_masks, ids = _inputs(2)
    with torch.inference_mode():
        assert torch.equal(model(image, ref_images, ref_masks, ids), loaded(image, ref_images, ref_masks, ids))


def test_config_presets_and_round_trip():
    for name in STMAConfig.PRESETS:
        config = STMAConfig.preset(name)
        assert STMAConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="architecture"):
        STMAConfig.from_dict({"architecture": "cutie"})
    with pytest.raises(ValueError, match="unknown preset"):
        STMAConfig.preset("huge")


def test_older_config_keys_are_read_under_their_new_names():
    """A config.json written before matching_keys existed says propagation_dim (earlier stma-tiny
    releases): it still loads, as a model with learned keys of that width."""
    data = STMAConfig().to_dict()
    data["propagation_dim"] = data.pop("learned_key_dim")
    for key in ("matching_keys", "matching_top_k", "cut_threshold"):
        del data[key]
    data["propagation_dim"] = 48
    config = STMAConfig.from_dict(data)
    assert config.learned_key_dim == 48 and config.matching_keys == "learned" and config.cut_threshold == 0
    assert STMA(config).propagation.key.out_features == 48


def test_base_preset_uses_patch_encoder():
    config = STMAConfig.preset("base")
    small = STMAConfig(**{**config.to_dict(), "dim": 48, "heads": 4, "depth": 2, "vit_dim": 48,
                          "decoder_widths": [32, 16, 16], "embed_dim": 16})
    model = STMA(small).eval()
    image, ref_images, ref_masks, ids = _inputs(2, size=(48, 64), refs=1)
    with torch.inference_mode():
        assert model(image, ref_images, ref_masks, ids).shape == (1, 3, 48, 64)


def test_inference_copy_matches_and_leaves_the_model_alone(model):
    image, ref_images, ref_masks, ids = _inputs(2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fast = model.for_inference()
    with torch.inference_mode():
        torch.testing.assert_close(fast(image, ref_images, ref_masks, ids), model(image, ref_images, ref_masks, ids),
                                   rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.encoder.modules())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_inference_in_place_tunes_the_model_itself(model):
    image, ref_images, ref_masks, ids = _inputs(2)
    own = STMA(model.config).eval()
    own.load_state_dict(model.state_dict())
    assert own.for_inference(in_place=True) is own
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in own.encoder.modules())
    with torch.inference_mode():
        torch.testing.assert_close(own(image, ref_images, ref_masks, ids), model(image, ref_images, ref_masks, ids),
                                   rtol=1e-4, atol=1e-4)


def test_segment_follows_the_previous_frame(model):
    """Once the prior counts, moving the previous frame's masks moves the prediction with them."""
    image, ref_images, ref_masks, ids = _inputs(1, size=(128, 128), refs=1)
    weighted = STMA(model.config).eval()
    weighted.load_state_dict(model.state_dict())
    with torch.no_grad():
        weighted.propagation.weight.fill_(20.0)
        weighted.propagation.log_temperature.fill_(8.0)  # each patch matches itself
    features = weighted.encode(image)
    features.tokens = torch.randn_like(features.tokens)  # distinct patches (an untrained encoder gives near-equal ones)
    features.keys = torch.nn.functional.normalize(torch.randn_like(features.keys), dim=1)
    left = torch.zeros(1, 1, 128, 128)
    left[..., 32:96, :48] = 1
    right = torch.flip(left, dims=[-1])
    with torch.no_grad():
        outputs = [weighted.segment(features, [weighted.memorize(features, masks, ids)], ids).argmax(1)
                   for masks in (left, right)]
    assert outputs[0][0, 16, :8].eq(1).all() and outputs[0][0, 16, -8:].eq(0).all()
    assert outputs[1][0, 16, -8:].eq(1).all() and outputs[1][0, 16, :8].eq(0).all()


def test_prior_does_not_veto_an_object_absent_from_the_previous_frame(model):
    """An object held by an older memory frame but absent from the previous one gets no prior at all:
    its logits are those of the network alone, however strongly the prior counts for the others."""
    image, ref_images, ref_masks, ids = _inputs(2, size=(96, 128), refs=1)
    anchor_masks = torch.zeros(1, 2, 96, 128)
    anchor_masks[:, 0, 16:48, 16:48] = 1
    anchor_masks[:, 1, 48:80, 64:112] = 1
    previous_masks = anchor_masks.clone()
    previous_masks[:, 1] = 0  # object 2 hidden in the previous frame
    with torch.no_grad():
        anchor = model.memorize(model.encode(ref_images[:, 0]), anchor_masks, ids)
        previous = model.memorize(model.encode(image), previous_masks, ids)
        features = model.encode(image)
        strong, none = STMA(model.config).eval(), STMA(model.config).eval()
        for copy, weight in ((strong, 20.0), (none, 0.0)):
            copy.load_state_dict(model.state_dict())
            copy.propagation.weight.fill_(weight)
        with_prior = strong.segment(features, [anchor, previous], ids)
        without_prior = none.segment(features, [anchor, previous], ids)
    torch.testing.assert_close(with_prior[:, 2], without_prior[:, 2])  # absent object: untouched
    assert (with_prior[:, 1] - without_prior[:, 1]).abs().max() > 1  # present object: the prior counts


def test_across_a_cut_the_previous_frame_gives_no_prior(model):
    """A frame whose patches do not match the previous frame's (a hard cut) gets no local prior for any
    object; within a shot the prior counts."""
    image, ref_images, ref_masks, ids = _inputs(2, size=(96, 128), refs=1)
    masks = torch.zeros(1, 2, 96, 128)
    masks[:, 0, 16:48, 16:48] = 1
    masks[:, 1, 48:80, 64:112] = 1
    config = replace(model.config, cut_match=0.0)  # every object goes on across the cut
    strong, none = STMA(config).eval(), STMA(config).eval()
    with torch.no_grad():
        for copy, weight in ((strong, 20.0), (none, 0.0)):
            copy.load_state_dict(model.state_dict())
            copy.propagation.weight.fill_(weight)
        features = strong.encode(image)
        previous = strong.memorize(strong.encode(image), masks, ids)
        continued = [m.segment(features, [previous], ids) for m in (strong, none)]
        features.keys = torch.nn.functional.normalize(torch.randn_like(features.keys), dim=1)  # another shot
        cut = [m.segment(features, [previous], ids) for m in (strong, none)]
    assert (continued[0] - continued[1]).abs().max() > 1
    torch.testing.assert_close(cut[0][:, 1:], cut[1][:, 1:])


@pytest.mark.parametrize("cut_match", [0.0, 0.8])
def test_across_a_cut_an_object_the_new_shot_does_not_show_is_left_behind(model, cut_match):
    """A new shot that shows object 1's patches again but nothing of object 2: with `cut_match`, object 2
    gets no mask on that frame and object 1 goes on; without it, or in training, both go on. Within a shot
    nothing changes."""
    image = _inputs(2, size=(96, 128), refs=1)[0]
    masks = torch.zeros(1, 2, 96, 128)
    masks[:, 0, 16:48, 16:48] = 1
    masks[:, 1, 48:80, 64:112] = 1
    ids = torch.tensor([[3, 5]])
    cutter = STMA(replace(model.config, cut_match=cut_match)).eval()
    cutter.load_state_dict(model.state_dict())
    with torch.no_grad():
        features = cutter.encode(image)
        features.keys = torch.nn.functional.normalize(torch.randn_like(features.keys), dim=1)  # distinct patches
        previous = cutter.memorize(features, masks, ids)
        within = cutter.segment(features, [previous], ids)
        other = torch.nn.functional.normalize(torch.randn_like(features.keys), dim=1)  # another shot ...
        other[:, :, 1:3, 1:3] = features.keys[:, :, 1:3, 1:3]  # ... that shows object 1's patches
        features.keys = other
        cut = cutter.segment(features, [previous], ids)
        training = cutter.train().segment(features, [previous], ids)
    assert within[:, 1:].amax((2, 3)).min() > -1e3
    assert cut[:, 1].max() > -1e3
    assert (cut[:, 2].max() <= -1e3) == (cut_match > 0)
    assert training[:, 2].max() > -1e3  # a rule of inference: training sees the model's own logits


@pytest.mark.parametrize("readout_all", [False, True])
def test_memory_readout_reaches_held_objects_only_with_readout_all(readout_all):
    """An object the previous frame holds gets the memory readout's log-prior only with readout_all."""
    config = STMAConfig.from_dict({**STMAConfig.preset("tiny").to_dict(), "readout_all": readout_all})
    image, ref_images, ref_masks, ids = _inputs(1, size=(64, 96), refs=1)
    strong, none = STMA(config).eval(), STMA(config).eval()
    with torch.no_grad():
        none.load_state_dict(strong.state_dict())
        strong.matching.weight.fill_(20.0)
        none.matching.weight.fill_(0.0)
        features = strong.encode(image)
        memory = [strong.memorize(features, ref_masks[:, 0], ids)]  # the previous frame holds the object
        changed = (strong.segment(features, memory, ids) - none.segment(features, memory, ids))[:, 1].abs().max()
    assert (changed > 1) == readout_all


def test_presence_gates_the_logits_of_an_object_the_head_finds_absent(model):
    image, ref_images, ref_masks, ids = _inputs(2, size=(64, 64), refs=1)
    gated = STMA(model.config).eval()
    gated.load_state_dict(model.state_dict())
    with torch.no_grad():
        features = gated.encode(image)
        memory = [gated.memorize(gated.encode(ref_images[:, 0]), ref_masks[:, 0], ids)]
        logits, presence = gated.predict(features, memory, ids)
        assert presence.shape == (1, 2) and (presence > 3).all()  # a fresh head says "present"
        gated.presence.head[-1].bias.fill_(-30.0)  # now it says "absent" for every object
        absent_logits, _ = gated.predict(features, memory, ids)
    torch.testing.assert_close(absent_logits[:, 0], logits[:, 0])
    assert (absent_logits[:, 1:] < logits[:, 1:] - 25).all()
    assert absent_logits.argmax(1).eq(0).all()


def test_object_tokens_mark_an_object_the_frame_does_not_show():
    """Tokens pooled for an object a memory frame does not show carry the learned "absent" embedding,
    in the measure that the object is missing."""
    tokenizer = ObjectTokenizer(dim=16, tokens_per_object=2)
    features = torch.randn(1, 12, 16)
    masks = torch.zeros(1, 2, 12)
    masks[:, 0, :6] = 1.0  # object 1 covers six patches; object 2 is absent
    ids = torch.randn(1, 2, 16)
    with torch.no_grad():
        before = tokenizer(features, masks, ids)
        tokenizer.absent.fill_(1.0)
        after = tokenizer(features, masks, ids)
    shift = (after - before).mean(-1)[0]
    torch.testing.assert_close(shift[2:], torch.ones(2))  # absent: the whole embedding
    assert (shift[:2] < 0.05).all()  # present: 1 - visibility = 0.25 / 6.25
    torch.testing.assert_close(visibility(masks), torch.tensor([[6 / 6.25, 0.0]]))


def test_a_pooled_memory_frame_has_a_quarter_of_the_tokens_and_the_same_meaning(model):
    """Pooling averages 2x2 patches (odd grids rounded up) of reference tokens, positions, keys and
    coverage; object tokens stay. A memory mixing pooled and full frames is read like any other."""
    image, ref_images, ref_masks, ids = _inputs(2, size=(80, 112), refs=2)
    with torch.inference_mode():
        entries = [model.memorize(model.encode(ref_images[:, i]), ref_masks[:, i], ids) for i in range(2)]
        pooled = entries[0].pooled()
        h, w = entries[0].keys.shape[-2:]  # 5 x 7 at stride 16
        assert pooled.keys.shape[-2:] == (3, 4) and pooled.pos.shape == (1, 12, model.config.dim)
        for (reference, objects), (full_reference, full_objects) in zip(pooled.levels, entries[0].levels):
            assert reference.shape[1] == 12 and torch.equal(objects, full_objects)
        torch.testing.assert_close(pooled.keys.norm(dim=1), torch.ones(1, 3, 4))
        torch.testing.assert_close(pooled.coverage.sum(1), torch.ones(1, 3, 4))
        logits, presence = model.predict(model.encode(image), [pooled, entries[1]], ids)
    assert logits.shape[1] == 3 and presence.shape == (1, 2) and torch.isfinite(logits).all()


def test_a_memory_entry_pads_the_objects_it_does_not_hold_and_drops_objects(model):
    """An entry made with 2 objects, read by a frame that has 3: the third object gets zero coverage, zero
    tokens, zero visibility and no given mask. Dropping the first object moves its coverage to the background,
    and its given flag goes with it."""
    _, ref_images, ref_masks, ids = _inputs(2, size=(64, 80), refs=1)
    k = model.config.tokens_per_object
    three = torch.cat([ids, ids.max(1, keepdim=True).values + 1], dim=1)
    with torch.inference_mode():
        given = torch.tensor([[False, True]])
        entry = model.memorize(model.encode(ref_images[:, 0]), ref_masks[:, 0], ids, given=given)
        assert entry.held == 2 and torch.equal(entry.object_ids, ids)
        assert entry.given_of(three).tolist() == [[False, True, False]]
        coverage = entry.coverage_of(three, torch.float32)
        assert coverage.shape[1] == 4 and torch.equal(coverage[:, :3], entry.coverage) and not coverage[:, 3].any()
        objects = entry.last_objects_of(three, k)
        assert objects.shape[1] == 3 * k and torch.equal(objects[:, :2 * k], entry.levels[-1][1])
        assert not objects[:, 2 * k:].any()
        assert entry.visibility_of(three, torch.float32)[0, 2] == 0
        before = entry.coverage.clone()
        second = [level[1][:, k:2 * k] for level in entry.levels]
        entry.drop_objects([int(ids[0, 0])])
    assert entry.held == 1 and torch.equal(entry.object_ids, ids[:, 1:]) and entry.given.tolist() == [[True]]
    torch.testing.assert_close(entry.coverage[:, 0], before[:, 0] + before[:, 1])
    assert torch.equal(entry.coverage[:, 1], before[:, 2])
    assert all(torch.equal(level[1], tokens) for level, tokens in zip(entry.levels, second))


def test_a_memory_entry_is_read_by_object_id_in_any_order(model):
    """Readers name objects by ID-table entry: asked in another order, or for an id it never held, the entry
    answers per id, so reading objects in reverse order gives the reverse of each object's coverage, tokens
    and visibility, and a prediction with the objects reversed is the same prediction, reversed."""
    image, ref_images, ref_masks, ids = _inputs(2, size=(64, 80), refs=2)
    k = model.config.tokens_per_object
    reverse = ids.flip(1)
    with torch.inference_mode():
        entries = [model.memorize(model.encode(ref_images[:, i]), ref_masks[:, i], ids) for i in range(2)]
        entry = entries[0]
        assert torch.equal(entry.coverage_of(reverse, torch.float32)[:, 1:], entry.coverage[:, 1:].flip(1))
        tokens = entry.levels[-1][1].unflatten(1, (2, k))
        assert torch.equal(entry.last_objects_of(reverse, k), tokens.flip(1).flatten(1, 2))
        assert torch.equal(entry.visibility_of(reverse, torch.float32), entry.visibility_of(ids, torch.float32).flip(1))
        unknown = torch.tensor([[next(i for i in range(1, model.config.num_ids + 1) if i not in ids)]])
        assert not entry.coverage_of(unknown, torch.float32)[:, 1:].any() and not entry.last_objects_of(unknown, k).any()
        features = model.encode(image)
        logits, presence = model.predict(features, entries, ids)
        reversed_logits, reversed_presence = model.predict(features, entries, reverse)
    torch.testing.assert_close(reversed_logits[:, 1:], logits[:, 1:].flip(1))
    torch.testing.assert_close(reversed_presence, presence.flip(1))


def test_a_memory_frame_is_projected_once_and_again_after_a_change(model):
    """The keys and values that test frames read are made on an entry's first read and reused; dropping an
    object makes them anew. Either way a read equals one from an entry never read before."""
    image, ref_images, ref_masks, ids = _inputs(2, size=(64, 80), refs=2)

    def fresh() -> list:
        return [model.memorize(model.encode(ref_images[:, i]), ref_masks[:, i], ids) for i in range(2)]

    with torch.inference_mode():
        features = model.encode(image)
        entries = fresh()
        first = model.predict(features, entries, ids)[0]
        cached = [entry.projected for entry in entries]
        assert all(c is not None and len(c) == len(model.blocks) for c in cached)
        again = model.predict(features, entries, ids)[0]
        assert all(entry.projected is c for entry, c in zip(entries, cached))
        torch.testing.assert_close(again, first, rtol=0, atol=0)
        for entry in entries:
            entry.drop_objects([int(ids[0, 0])])
        assert all(entry.projected is None for entry in entries)
        dropped = model.predict(features, entries, ids[:, 1:])[0]
        unread = fresh()
        for entry in unread:
            entry.drop_objects([int(ids[0, 0])])
        torch.testing.assert_close(dropped, model.predict(features, unread, ids[:, 1:])[0])


def test_memory_frames_keep_stride_4_labels_for_the_refinement_only_when_it_is_on(model):
    """With `refine_radius`, every memory frame keeps its stride-4 labels, and a frame with given masks its
    stride-8 keys too: dropped with an object like its coverage, not kept by a pooled frame, read by object id."""
    refining = STMA(replace(STMAConfig.preset("tiny"), refine_radius=4)).eval()
    _, ref_images, ref_masks, ids = _inputs(2, size=(64, 80), refs=1)
    with torch.inference_mode():
        features = refining.encode(ref_images[:, 0])
        predicted = refining.memorize(features, ref_masks[:, 0], ids)
        assert predicted.fine.labels.shape == (1, 3, 16, 20) and predicted.fine.keys is predicted.fine.parts is None
        entry = refining.memorize(features, ref_masks[:, 0], ids, given=torch.ones_like(ids, dtype=torch.bool))
        assert entry.fine.keys.shape[-2:] == (8, 10) and torch.equal(entry.fine.labels, predicted.fine.labels)
        assert entry.fine.parts.shape == (1, 3, 16, 20)
        torch.testing.assert_close(entry.fine.labels.sum(1), torch.ones(1, 16, 20))
        assert entry.pooled().fine is None
        three = torch.cat([ids, ids.max(1, keepdim=True).values + 1], dim=1)
        read = entry.fine_of(three[:, [2, 1, 0]]).labels
        assert not read[:, 1].any() and torch.equal(read[:, 2:], entry.fine.labels[:, [2, 1]])
        assert torch.equal(entry.fine_of(three[:, [2, 1, 0]]).parts[:, 2:], entry.fine.parts[:, [2, 1]])
        before = entry.fine.labels.clone()
        entry.drop_objects([int(ids[0, 0])])
        given = torch.ones_like(ids, dtype=torch.bool)
        assert model.memorize(model.encode(ref_images[:, 0]), ref_masks[:, 0], ids, given=given).fine is None  # off
    assert entry.fine.parts.shape[1] == 2
    torch.testing.assert_close(entry.fine.labels[:, 0], before[:, 0] + before[:, 1])
    assert torch.equal(entry.fine.labels[:, 1], before[:, 2])


def test_the_refinement_only_adds_pixels_and_needs_the_encoder_keys(model):
    refining = STMA(replace(model.config, refine_radius=4))
    refining.load_state_dict(model.state_dict())
    refining.eval()
    image, ref_images, ref_masks, ids = _inputs(2, size=(64, 80), refs=1)
    with torch.inference_mode():
        features = model.encode(ref_images[:, 0])
        entry = model.memorize(features, ref_masks[:, 0], ids)
        refined_entry = refining.memorize(features, ref_masks[:, 0], ids, given=torch.ones_like(ids, dtype=torch.bool))
        plain = model.segment(model.encode(image), [entry], ids).argmax(1)
        refined = refining.segment(refining.encode(image), [refined_entry], ids).argmax(1)
    assert ((refined == plain) | (plain == 0)).all()
    with pytest.raises(ValueError, match="refine_radius"):
        STMAConfig(refine_radius=4)  # learned matching keys
