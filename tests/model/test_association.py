"""Each attention of the STML block equals a naive softmax(QK^T/sqrt(d))V computation."""
import math

import pytest
import torch

from stma_cli.model.association import ObjectSelfAttention, ReferenceObjectEnhancement, sine_position_embedding
from stma_cli.model.association import TestReferenceCorrelation as ReferenceCorrelation

DIM, HEADS = 16, 4


def naive_attention(module, x, context, query_pos=None, key_pos=None, key_mask=None):
    """Multi-head attention written out with explicit loops over heads."""
    xq, xkv = module.norm_q(x), module.norm_kv(context)
    q = module.q(xq if query_pos is None else xq + query_pos)
    k = module.k(xkv if key_pos is None else xkv + key_pos)
    v = module.v(xkv)
    d = DIM // HEADS
    heads = []
    for h in range(HEADS):
        qh, kh, vh = (t[..., h * d:(h + 1) * d] for t in (q, k, v))
        scores = qh @ kh.transpose(1, 2) / math.sqrt(d)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, :], float("-inf"))
        heads.append(scores.softmax(-1) @ vh)
    return module.out(torch.cat(heads, dim=-1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_object_self_attention_matches_naive():
    module = ObjectSelfAttention(DIM, HEADS)
    objects = torch.randn(2, 6, DIM)
    valid = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    expected = naive_attention(module, objects, objects, key_mask=valid)
    torch.testing.assert_close(module(objects, valid), expected, rtol=1e-5, atol=1e-5)


def test_reference_object_enhancement_matches_naive():
    module = ReferenceObjectEnhancement(DIM, HEADS)
    reference, objects = torch.randn(2, 12, DIM), torch.randn(2, 6, DIM)
    pos = sine_position_embedding(3, 4, DIM)[None]
    expected = naive_attention(module, reference, objects, query_pos=pos)
    torch.testing.assert_close(module(reference, objects, pos), expected, rtol=1e-5, atol=1e-5)


def test_test_reference_correlation_matches_naive():
    """Two memory frames, each projected on its own (reference tokens at their positions, then object tokens)
    and concatenated as STMA reads them: the same as attending to the whole memory at once."""
    module = ReferenceCorrelation(DIM, HEADS)
    test = torch.randn(2, 12, DIM)
    references, objects = torch.randn(2, 2, 12, DIM), torch.randn(2, 2, 3, DIM)
    pos = sine_position_embedding(3, 4, DIM)[None]
    memory = torch.cat([references[:, 0], references[:, 1], objects[:, 0], objects[:, 1]], dim=1)
    memory_pos = torch.cat([pos, pos, torch.zeros(1, 6, DIM)], dim=1).expand(2, -1, -1)
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[1, -3:] = False
    expected = naive_attention(module, test, memory, query_pos=pos, key_pos=memory_pos, key_mask=mask)
    frames = [module.project_frame(references[:, i], objects[:, i], pos) for i in range(2)]
    keys = torch.cat([f[0] for f in frames] + [f[2] for f in frames], dim=1)
    values = torch.cat([f[1] for f in frames] + [f[3] for f in frames], dim=1)
    torch.testing.assert_close(module(test, pos, keys, values, mask), expected, rtol=1e-5, atol=1e-5)


def test_position_embedding_shape_and_distinct_positions():
    emb = sine_position_embedding(5, 7, 32)
    assert emb.shape == (35, 32)
    assert torch.cdist(emb, emb).fill_diagonal_(1.0).min() > 1e-3
