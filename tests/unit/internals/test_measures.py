"""Internals measures (internals.measures) with known answers, on tiny Llama, Qwen2 and GPT-2 models
and the embedded model: attention shares and attention received, depth states, convergence and the
logit lens, marker masks, and a recurrent-depth stand-in."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tokenscope.errors import ConfigError
from tokenscope.inputs.chat import generation_prompt_ids
from tokenscope.inputs.prompts import load_prompt_set
from tokenscope.internals.measures import (
    attention_received,
    convergence_distances,
    depth_states,
    logit_lens,
    marker_attention,
    marker_mask,
)
from tokenscope.internals.options import MarkerAttentionOptions, RecurrentDepth
from tokenscope.model.anatomy import model_anatomy
from tokenscope.scoring.formulas import metrics_from_logits

from helpers.paths import REPO
from helpers.tiny_models import ARCHS

SEQUENCE = list(range(3, 40))


def eager_attentions(model, ids) -> tuple[torch.Tensor, ...]:
    """Reference: every layer's attention weights from transformers' own output_attentions."""
    with torch.no_grad():
        model.set_attn_implementation("eager")
        try:
            return model(input_ids=torch.tensor([ids]), output_attentions=True).attentions
        finally:
            model.set_attn_implementation("sdpa")


@pytest.mark.parametrize("arch", ARCHS)
def test_attention_shares_sum_to_one_and_match_output_attentions(tiny_loaded, arch):
    model, _ = tiny_loaded(arch)
    sequences = [SEQUENCE, SEQUENCE[:21], SEQUENCE[5:]]
    everything = [np.ones(len(s), dtype=bool) for s in sequences]
    for shares in marker_attention(
        model, sequences, everything, [0, 0, 0], options=MarkerAttentionOptions(batch_size=2), show_progress=False
    ):
        np.testing.assert_allclose(shares, 1.0, atol=1e-5)
    masks = [np.arange(len(s)) % 4 == 1 for s in sequences]
    options = MarkerAttentionOptions(layers=(-1,), batch_size=3)
    batched = marker_attention(model, sequences, masks, [10, 5, 0], options=options, show_progress=False)
    for ids, mask, start, got in zip(sequences, masks, [10, 5, 0], batched, strict=True):
        last = eager_attentions(model, ids)[-1][0]  # [heads, T, T]
        expected = last[:, :, torch.as_tensor(mask)].sum(-1).mean(0)[start:]
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)
    assert model.config._attn_implementation == "sdpa"  # eager only for the pass that needed it


@pytest.mark.parametrize("arch", ARCHS)
def test_attention_received_is_the_causal_column_mean(tiny_loaded, arch):
    model, _ = tiny_loaded(arch)
    got = attention_received(model, SEQUENCE, [(0, 1), (1, 3)])
    attentions = eager_attentions(model, SEQUENCE)
    length = len(SEQUENCE)
    for row, (layer, head) in enumerate([(0, 1), (1, 3)]):
        weights = attentions[layer][0, head].numpy()
        expected = [weights[k:, k].mean() for k in range(length)]
        np.testing.assert_allclose(got[row], expected, atol=1e-6)
    # Every query row sums to 1, so the weights received add up to the number of queries.
    totals = got * np.arange(length, 0, -1)
    np.testing.assert_allclose(totals.sum(axis=1), length, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_depth_states_convergence_and_logit_lens(tiny_loaded, arch):
    model, _ = tiny_loaded(arch)
    states = depth_states(model, SEQUENCE)
    with torch.no_grad():
        reference = model(input_ids=torch.tensor([SEQUENCE]), output_hidden_states=True)
    assert states.shape[0] == model.config.get_text_config().num_hidden_layers + 1
    torch.testing.assert_close(states[0], reference.hidden_states[0][0].float())
    distances = convergence_distances(states)
    assert distances.shape == (states.shape[0], len(SEQUENCE))
    assert np.all(distances[-1] == 0) and np.all(distances[:-1] > 0)
    lens = logit_lens(model, states, chunk_rows=7)
    own = metrics_from_logits(reference.logits[0], torch.tensor(SEQUENCE), top_k=1)
    np.testing.assert_allclose(lens.entropy[-1], own.entropy.numpy(), atol=1e-4)
    np.testing.assert_array_equal(lens.top_ids[-1], own.topk_ids[:, 0].numpy())


def test_marker_mask_covers_markers_split_over_tokens():
    tokens = ["Let", " me", " <", "think", ">", " hard", " </", "think", ">", "<think>"]
    mask = marker_mask(tokens, ["<think>"])
    assert mask.tolist() == [False, False, True, True, True, False, False, False, False, True]
    assert marker_mask(tokens, ["think"]).sum() == 3
    assert not marker_mask(tokens, ["absent"]).any()


class ContractingStandIn(nn.Module):
    """A recurrent-depth stand-in: the same block applied `num_steps` times, x <- 0.5 x + c."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 8)
        self.core_block = nn.Linear(8, 8)
        with torch.no_grad():
            self.core_block.weight.copy_(0.5 * torch.eye(8))

    def forward(self, input_ids: torch.Tensor, num_steps: int = 4) -> torch.Tensor:
        state = self.embed(input_ids)
        for _ in range(num_steps):
            state = self.core_block(state)
        return state


def test_recurrent_depth_states_per_iteration():
    torch.manual_seed(0)
    model = ContractingStandIn()
    states = depth_states(model, [1, 2, 3], RecurrentDepth(module="core_block", steps_argument="num_steps", steps=12))
    assert states.shape == (12, 3, 8)
    distances = convergence_distances(states)
    assert np.all(distances[-1] == 0)
    # x_k - x_fixed = 0.5^k (x_0 - x_fixed), so ||x_k - x_N|| is proportional to 0.5^k - 0.5^N.
    k = np.arange(1, 13)[:, None]
    expected = (0.5**k - 0.5**12) / (0.5 - 0.5**12)
    np.testing.assert_allclose(
        distances / distances[:1], np.broadcast_to(expected, distances.shape), rtol=1e-3, atol=1e-6
    )
    with pytest.raises(ConfigError, match="not a submodule"):
        depth_states(model, [1], RecurrentDepth(module="missing"))


def test_embedded_model_internals(embedded):
    model, tokenizer = embedded
    anatomy = model_anatomy(model)
    assert anatomy.n_layers == 30 and len(anatomy.attentions) == 30
    prompt = load_prompt_set(REPO / "config" / "prompts" / "smoke.jsonl")[0]
    ids = generation_prompt_ids(tokenizer, prompt.messages)
    states = depth_states(model, ids)
    lens = logit_lens(model, states)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    own = metrics_from_logits(logits, torch.tensor(ids), top_k=1)
    np.testing.assert_allclose(lens.entropy[-1], own.entropy.numpy(), atol=1e-4)
    assert np.all(convergence_distances(states)[-1] == 0)
    options = MarkerAttentionOptions(layers=(0, 15, -1))
    shares = marker_attention(model, [ids], [np.ones(len(ids), bool)], [0], options=options, show_progress=False)[0]
    np.testing.assert_allclose(shares, 1.0, atol=1e-4)
    received = attention_received(model, ids, [(1, 1), (1, 8)])
    np.testing.assert_allclose((received * np.arange(len(ids), 0, -1)).sum(axis=1), len(ids), rtol=1e-4)
