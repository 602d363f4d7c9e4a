"""Packed and padded forward passes agree: per-token logprobs and values to 1e-5 in fp32, on ragged batches."""

from __future__ import annotations

import torch

from hh_ray.algo.batch import first_fit
from hh_ray.models.forward import layout, load_model, response_logprobs, response_values


def test_first_fit_decreasing_by_hand():
    # lengths 5, 4, 3, 3, 1 into bins of 7: [5] takes 1 later; [4, 3]; [3]
    assert first_fit([3, 5, 4, 1, 3], 7) == [[1, 3], [2, 0], [4]]
    assert first_fit([9, 2], 7) == [[0], [1]]  # too long for any bin: a bin of its own


def test_packed_equals_padded_on_a_ragged_batch(tiny_model_dir):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, 300, (n,), generator=g).tolist() for n in (5, 17, 9, 30, 2, 11)]
    responses = [torch.randint(3, 300, (n,), generator=g).tolist() for n in (1, 8, 24, 3, 15, 6)]
    padded, packed = layout(prompts, responses, 0), layout(prompts, responses, 0, pack_to=48)
    assert packed.ids.shape[0] < padded.ids.shape[0] and packed.padding_share < padded.padding_share
    lm = load_model(str(tiny_model_dir), "causal_lm").eval()
    with torch.no_grad():
        a, mask, ea = response_logprobs(lm, prompts, responses, 0, 0.7, entropy="metric")
        b, mask_b, eb = response_logprobs(lm, prompts, responses, 0, 0.7, entropy="metric", pack_to=48)
    assert torch.equal(mask, mask_b)
    assert (a - b).abs().max() < 1e-5 and (ea - eb).abs().max() < 1e-5
    critic = load_model(str(tiny_model_dir), "value").eval()
    with torch.no_grad():
        va, _ = response_values(critic, prompts, responses, 0)
        vb, _ = response_values(critic, prompts, responses, 0, pack_to=48)
    assert (va - vb).abs().max() < 1e-5
    assert (a * mask).abs().sum() > 0  # not trivially equal
