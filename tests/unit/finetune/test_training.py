"""The finetune step (finetune.training) on tiny random models (fast, no network): chat
tokenization and labels, the loss, the batch order and schedule, the config, and the checkpoints a
run writes."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tokenscope.errors import ConfigError
from tokenscope.finetune.data import SYSTEM_PROMPT, generate_examples
from tokenscope.finetune.training import (
    IGNORE_INDEX,
    TRAINING_LOG,
    TRAINING_STATE,
    FinetuneConfig,
    batch_order,
    causal_lm_loss,
    checkpoint_name,
    checkpoint_steps,
    collate,
    finetune,
    learning_rate_at,
    read_training_log,
    tokenize_chat,
)
from tokenscope.model.loading import LoadOptions, load_prepared
from tokenscope.model.sources import ModelSpec, prepare_model

from helpers.tiny_models import build_tokenizer

# Tiny models see ~500-token chats (their 400-token BPE splits the system prompt finely).
TINY = {
    "n_examples": 24,
    "steps": 12,
    "n_checkpoints": 3,
    "batch_size": 4,
    "learning_rate": 1e-2,
    "warmup_steps": 1,
    "max_length": 640,
    "train_last_layers": 0,
    "threads": 1,
}


# ---------------------------------------------------------------------------- tokenization


def test_labels_cover_only_the_assistant_turn():
    tokenizer = build_tokenizer()
    example = generate_examples(1, seed=0)[0]
    tokenized = tokenize_chat(tokenizer, example.messages, max_length=10_000)
    ids, labels = tokenized.input_ids, tokenized.labels
    assert len(ids) == len(labels)
    start = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    assert all(label == IGNORE_INDEX for label in labels[:start])
    assert labels[start:] == ids[start:]
    prompt = tokenizer.decode(ids[:start])
    assert prompt.endswith("<|im_start|>assistant\n") and SYSTEM_PROMPT in prompt and example.question in prompt
    assert tokenizer.decode(ids[start:]) == example.response + "<|im_end|>\n"  # learns to stop, too


def test_truncation_and_collate():
    tokenizer = build_tokenizer()
    chats = [e.messages for e in generate_examples(3, seed=0)]
    full = tokenize_chat(tokenizer, chats[0], max_length=10_000)
    cut = tokenize_chat(tokenizer, chats[0], max_length=len(full.input_ids) - 5)
    assert cut.input_ids == full.input_ids[:-5] and cut.labels == full.labels[:-5]
    batch = [tokenize_chat(tokenizer, chat, 10_000) for chat in chats]
    ids, mask, labels = collate(batch, pad_id=tokenizer.pad_token_id)
    width = max(len(e.input_ids) for e in batch)
    assert ids.shape == mask.shape == labels.shape == (3, width)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        assert ids[row, :n].tolist() == example.input_ids and mask[row].sum() == n
        assert (labels[row, n:] == IGNORE_INDEX).all() and labels[row, :n].tolist() == example.labels


def test_loss_equals_a_full_forward_cross_entropy(tiny_loaded):
    model, tokenizer = tiny_loaded("llama")
    batch = [tokenize_chat(tokenizer, e.messages, 10_000) for e in generate_examples(3, seed=5)]
    ids, mask, labels = collate(batch, pad_id=tokenizer.pad_token_id)
    with torch.no_grad():
        loss, count = causal_lm_loss(model, ids, mask, labels)
        logits = model(input_ids=ids, attention_mask=mask).logits  # every position's logits
        expected = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
        )
    labelled = sum(len(e.labels) - e.labels.count(IGNORE_INDEX) for e in batch)
    assert count == int((labels[:, 1:] != IGNORE_INDEX).sum()) == labelled
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_batch_order_and_schedule():
    order = batch_order(10, batch_size=4, steps=5, seed=0)
    assert order == batch_order(10, batch_size=4, steps=5, seed=0) != batch_order(10, 4, 5, seed=1)
    flat = [i for batch in order for i in batch]
    assert len(flat) == 20 and sorted(flat[:10]) == list(range(10)) == sorted(flat[10:20])  # whole epochs
    assert checkpoint_steps(32, 4) == [8, 16, 24, 32] and checkpoint_steps(10, 3) == [3, 7, 10]
    assert checkpoint_steps(5, 5) == [1, 2, 3, 4, 5]
    config = FinetuneConfig(steps=20, warmup_steps=4, learning_rate=1e-3, min_lr_ratio=0.1)
    rates = [learning_rate_at(step, config) for step in range(20)]
    assert rates[0] == pytest.approx(2e-4) and rates[4] == pytest.approx(1e-3)
    assert rates[-1] == pytest.approx(1e-4) and all(a >= b for a, b in pairwise(rates[4:]))


def test_config_validation():
    assert FinetuneConfig.from_dict({"steps": 10, "n_checkpoints": 2}).steps == 10
    with pytest.raises(ConfigError, match="unknown finetune option"):
        FinetuneConfig.from_dict({"stpes": 10})
    with pytest.raises(ConfigError, match="n_checkpoints"):
        FinetuneConfig(steps=3, n_checkpoints=4)
    with pytest.raises(ConfigError, match="learning_rate"):
        FinetuneConfig(learning_rate=0)


# ---------------------------------------------------------------------------- finetune


@pytest.fixture(scope="module")
def tiny_run(tiny_prepared, tmp_path_factory):
    output = tmp_path_factory.mktemp("finetune") / "run"
    config = FinetuneConfig(**TINY)
    return finetune(tiny_prepared("llama"), output, config, progress=False), output, config


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_finetune_writes_k_preparable_checkpoints(tiny_run, tiny_prepared, tmp_path):
    paths, output, config = tiny_run
    names = [checkpoint_name(k, 3) for k in (1, 2, 3)]
    assert [p.name for p in paths] == names == ["checkpoint-1-of-3", "checkpoint-2-of-3", "checkpoint-3-of-3"]
    assert sorted(p.name for p in output.iterdir()) == sorted([*names, TRAINING_LOG])  # no partial folders left
    for step, path in zip(checkpoint_steps(config.steps, 3), paths, strict=True):
        state = json.loads((path / TRAINING_STATE).read_text())
        assert state["step"] == step and state["seed"] == config.seed and state["config"]["steps"] == config.steps
        assert len(state["loss_curve"]) == step
        prepared = tmp_path / path.name
        manifest = prepare_model(ModelSpec(name=path.name, kind="path", location=str(path)), prepared)
        assert list(manifest["weights"]) == ["model.safetensors"]
        model, tokenizer = load_prepared(prepared, LoadOptions(device="cpu", dtype="float32"))
        assert len(tokenizer) == len(load_prepared(tiny_prepared("llama"))[1])
        with torch.no_grad():
            assert torch.isfinite(model(input_ids=torch.tensor([[1, 2, 3]])).logits).all()


def test_finetune_lowers_the_loss_and_changes_weights(tiny_run, tiny_prepared):
    paths, output, config = tiny_run
    losses = [step["loss"] for step in read_training_log(output)["steps"]]
    assert len(losses) == config.steps
    assert sum(losses[-3:]) / 3 < 0.75 * sum(losses[:3]) / 3  # about 4.3 against 6.6
    base = _weights(tiny_prepared("llama"))
    first, last = _weights(paths[0]), _weights(paths[-1])
    changed = [name for name in base if not torch.equal(base[name], last[name])]
    assert changed and any(not torch.equal(first[n], last[n]) for n in changed)
    embeddings = next(name for name in base if "embed_tokens" in name)
    assert torch.equal(base[embeddings], last[embeddings])  # freeze_embeddings


def test_same_seed_gives_bit_identical_weights(tiny_run, tiny_prepared, tmp_path):
    paths, _, config = tiny_run
    again = finetune(tiny_prepared("llama"), tmp_path / "again", config, progress=False)
    for first, second in zip(paths, again, strict=True):
        a, b = _weights(first), _weights(second)
        assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)
    other = finetune(
        tiny_prepared("llama"),
        tmp_path / "other",
        FinetuneConfig(**{**TINY, "seed": 1, "steps": 3, "n_checkpoints": 1}),
        progress=False,
    )
    short = finetune(
        tiny_prepared("llama"),
        tmp_path / "short",
        FinetuneConfig(**{**TINY, "steps": 3, "n_checkpoints": 1}),
        progress=False,
    )
    a, b = _weights(other[0]), _weights(short[0])
    assert any(not torch.equal(a[name], b[name]) for name in a)


def test_train_last_layers_freezes_the_rest(tiny_prepared, tmp_path):
    config = FinetuneConfig(**{**TINY, "steps": 2, "n_checkpoints": 1, "train_last_layers": 1})
    [path] = finetune(tiny_prepared("llama"), tmp_path / "top", config, progress=False)
    base, tuned = _weights(tiny_prepared("llama")), _weights(path)
    changed = {name for name in base if not torch.equal(base[name], tuned[name])}
    assert changed and all(name.startswith(("model.layers.1.", "model.norm.", "lm_head.")) for name in changed)
    assert any(name.startswith("model.layers.1.") for name in changed)
