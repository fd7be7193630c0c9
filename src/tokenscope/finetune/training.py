"""A short, deterministic supervised finetune on the generated reasoning data set.

The model of a prepared folder is trained in fp32 on the CPU with AdamW on chats from
`reasoning_data` (loss on the assistant tokens only) and K evenly spaced checkpoints are saved as
ordinary Hugging Face safetensors folders, `checkpoint-k-of-K`, so they can be prepared and
measured like any user checkpoint. Given its config (seed included) and thread count, a run is
bit-for-bit reproducible.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from tokenscope import __version__
from tokenscope.errors import ConfigError, ModelError
from tokenscope.finetune.config import FinetuneConfig, checkpoint_name
from tokenscope.finetune.data import generate_examples
from tokenscope.inputs.batching import pad, pad_id_of
from tokenscope.inputs.chat import teacher_forced_ids
from tokenscope.io import write_json
from tokenscope.model.anatomy import model_anatomy
from tokenscope.model.loading import LoadOptions, load_prepared
from tokenscope.model.sources import MANIFEST
from tokenscope.model.types import CausalLM, Tokenizer

log = logging.getLogger(__name__)

IGNORE_INDEX = -100  # label of positions that carry no loss (torch's cross_entropy default)
TRAINING_STATE = "training_state.json"
TRAINING_LOG = "training_log.json"


@dataclass(frozen=True)
class TrainingExample:
    """One tokenized chat: ids and labels (IGNORE_INDEX outside the assistant turn)."""

    input_ids: list[int]
    labels: list[int]


@dataclass
class StepRecord:
    step: int
    loss: float
    learning_rate: float
    grad_norm: float
    tokens: int  # tokens in the batch (padding excluded)
    seconds: float


@dataclass
class FinetuneLog:
    """The loss curve and timings of a run (written to `training_log.json` in the output folder)."""

    config: dict[str, Any]
    base_model: dict[str, Any]
    steps: list[StepRecord] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    trainable_parameters: int = 0
    total_parameters: int = 0
    examples_kept: int = 0
    train_seconds: float = 0.0

    @property
    def losses(self) -> list[float]:
        return [record.loss for record in self.steps]


def checkpoint_steps(steps: int, n_checkpoints: int) -> list[int]:
    """Optimizer steps after which checkpoint k = 1..K is saved: evenly spaced, the last at `steps`."""
    return [round(k * steps / n_checkpoints) for k in range(1, n_checkpoints + 1)]


def tokenize_chat(tokenizer: Tokenizer, messages: Sequence[dict[str, str]], max_length: int) -> TrainingExample:
    """Chat-template ids of the whole chat; only the final (assistant) turn is labelled."""
    *context, answer = messages
    if answer["role"] != "assistant":
        raise ValueError("the last message of a training chat must be the assistant's")
    ids, answer_start, _ = teacher_forced_ids(tokenizer, context, answer["content"], span="answer")
    ids = ids[:max_length]
    labels = [IGNORE_INDEX] * min(answer_start, len(ids)) + ids[answer_start:]
    return TrainingExample(input_ids=ids, labels=labels)


def build_training_set(tokenizer: Tokenizer, config: FinetuneConfig) -> list[TrainingExample]:
    """The generated chats, tokenized; chats truncated before their answer are dropped."""
    chats = [example.messages for example in generate_examples(config.n_examples, config.seed)]
    examples = [tokenize_chat(tokenizer, chat, config.max_length) for chat in chats]
    kept = [e for e in examples if any(label != IGNORE_INDEX for label in e.labels[1:])]
    if not kept:
        raise ConfigError(f"finetune.max_length={config.max_length} truncates every chat before its answer")
    if len(kept) < len(examples):
        log.warning(
            "finetune: %d of %d chats dropped (answer beyond max_length=%d)",
            len(examples) - len(kept),
            len(examples),
            config.max_length,
        )
    return kept


def batch_order(n_examples: int, batch_size: int, steps: int, seed: int) -> list[list[int]]:
    """Example indices of each step: epochs of seeded permutations, consumed batch by batch."""
    rng = random.Random(f"finetune-order-{seed}")  # independent of the data generator's stream
    stream: list[int] = []
    while len(stream) < steps * batch_size:
        epoch = list(range(n_examples))
        rng.shuffle(epoch)
        stream.extend(epoch)
    return [stream[i * batch_size : (i + 1) * batch_size] for i in range(steps)]


def collate(examples: Sequence[TrainingExample], pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """(input ids, attention mask, labels), right-padded to the longest chat of the batch."""
    ids, mask = pad([e.input_ids for e in examples], pad_id, "right", "cpu")
    labels, _ = pad([e.labels for e in examples], IGNORE_INDEX, "right", "cpu")
    return ids, mask, labels


def causal_lm_loss(model: CausalLM, ids: Tensor, mask: Tensor, labels: Tensor) -> tuple[Tensor, int]:
    """Mean next-token cross-entropy over labelled tokens, and their count.

    Logits are computed only for the trailing positions that can predict a label (the model's own
    `logits_to_keep`): the shared system prompt and the questions need no vocabulary projection.
    """
    targets = labels[:, 1:]
    labelled_positions = (targets != IGNORE_INDEX).any(dim=0).nonzero()
    first = int(labelled_positions[0]) if len(labelled_positions) else targets.shape[1] - 1
    keep = targets.shape[1] - first  # logits of positions first .. T-2 predict tokens first+1 .. T-1
    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep + 1, use_cache=False).logits[:, :-1]
    kept_targets = targets[:, first:]
    count = int((kept_targets != IGNORE_INDEX).sum())
    loss = nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        kept_targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss / max(count, 1), count


def select_trainable(model: CausalLM, config: FinetuneConfig) -> list[nn.Parameter]:
    """Freeze what the config keeps fixed; returns the parameters to optimize.

    Freezing the lower layers saves their backward pass (autograd records nothing before the
    first trainable layer); freezing embeddings saves the gradient and AdamW state of the
    largest matrix, which SmolLM2 also uses as its output head.
    """
    if config.train_last_layers:
        model.requires_grad_(False)
        anatomy = model_anatomy(model)
        for layer in anatomy.layers[max(0, anatomy.n_layers - config.train_last_layers) :]:
            layer.requires_grad_(True)
        # The final norm after the stack (and an untied head) is trained with the last layers.
        for norm in anatomy.final_norm:
            norm.requires_grad_(True)
        head = model.get_output_embeddings()
        if head is not None and head.weight is not model.get_input_embeddings().weight:
            head.requires_grad_(True)
    else:
        model.requires_grad_(True)
    if config.freeze_embeddings:
        model.get_input_embeddings().requires_grad_(False)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ConfigError("finetune config leaves no trainable parameters")
    return trainable


def learning_rate_at(step: int, config: FinetuneConfig) -> float:
    """Linear warmup over warmup_steps, then cosine decay to min_lr_ratio (step counts from 0)."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / (config.warmup_steps + 1)
    progress = (step - config.warmup_steps) / max(1, config.steps - 1 - config.warmup_steps)
    floor = config.min_lr_ratio
    return config.learning_rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def save_checkpoint(model: CausalLM, tokenizer: Tokenizer, target: Path, state: dict[str, Any]) -> Path:
    """Write a checkpoint folder atomically: into a hidden sibling, then renamed into place."""
    tmp = target.with_name(f".{target.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    write_json(state, tmp / TRAINING_STATE)
    for path in tmp.iterdir():
        path.chmod(0o644)  # some writers create 0600 files; results are meant to be shared
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def trainable_copy(model: CausalLM) -> CausalLM:
    """The model itself, or for a GGUF-converted one a plain copy that `save_pretrained` accepts.

    The embedded model's config keeps the GGUF `quantization_config` although its weights are
    already dequantized floats; transformers then refuses to save it. Other quantizations
    (integer weights) cannot be finetuned here.
    """
    quantization = getattr(model.config, "quantization_config", None)
    if quantization is None:
        return model
    as_dict = quantization if isinstance(quantization, dict) else vars(quantization)
    method = str(as_dict.get("quant_method"))
    if "gguf" not in method.lower():
        raise ModelError(f"finetune needs unquantized weights; this model is quantized with {method}")
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(model.config)
    delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    return plain


@contextmanager
def deterministic_torch(seed: int, threads: int | None) -> Iterator[None]:
    """Seed torch, enable deterministic algorithms and pin the thread count; restore all afterwards."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.get_num_threads(), torch.get_rng_state())
    torch.use_deterministic_algorithms(True)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0])
        torch.set_num_threads(saved[1])
        torch.set_rng_state(saved[2])


def _batches(
    examples: Sequence[TrainingExample], config: FinetuneConfig, pad_id: int
) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
    for indices in batch_order(len(examples), config.batch_size, config.steps, config.seed):
        yield collate([examples[i] for i in indices], pad_id)


def finetune(
    prepared_model_dir: str | Path,
    output_dir: str | Path,
    config: FinetuneConfig = FinetuneConfig(),
    progress: bool = True,
) -> list[Path]:
    """Finetune the prepared model on the generated reasoning chats; returns the K checkpoint folders.

    `output_dir` receives `checkpoint-k-of-K` folders (safetensors, tokenizer, `training_state.json`)
    and `training_log.json` with the loss curve; the log is written last.
    """
    prepared_model_dir, output_dir = Path(prepared_model_dir), Path(output_dir)
    manifest_path = prepared_model_dir / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / TRAINING_LOG).unlink(missing_ok=True)  # present only once a run completed

    with deterministic_torch(config.seed, config.threads):
        model, tokenizer = load_prepared(prepared_model_dir, LoadOptions(device="cpu", dtype="float32"))
        model = trainable_copy(model)
        examples = build_training_set(tokenizer, config)
        pad_id = pad_id_of(tokenizer)
        trainable = select_trainable(model, config)
        optimizer = torch.optim.AdamW(
            trainable, lr=config.learning_rate, weight_decay=config.weight_decay, betas=(0.9, 0.95), foreach=True
        )
        run_log = FinetuneLog(
            config=asdict(config),
            base_model={
                "prepared_dir": str(prepared_model_dir.resolve()),
                "model": manifest.get("model"),
                "resolved_revision": manifest.get("resolved_revision"),
                "weights": manifest.get("weights"),
            },
            trainable_parameters=sum(p.numel() for p in trainable),
            total_parameters=sum(p.numel() for p in model.parameters()),
            examples_kept=len(examples),
        )
        log.info(
            "finetune: %d chats, %d steps x batch %d, %.1fM of %.1fM parameters trained, threads=%d",
            len(examples),
            config.steps,
            config.batch_size,
            run_log.trainable_parameters / 1e6,
            run_log.total_parameters / 1e6,
            torch.get_num_threads(),
        )
        save_at = {step: k for k, step in enumerate(checkpoint_steps(config.steps, config.n_checkpoints), start=1)}
        log_every = max(1, config.steps // 16)
        saved: list[Path] = []
        model.train()
        started = time.perf_counter()
        bar = tqdm(total=config.steps, desc="finetune", unit="step", disable=not progress, mininterval=2.0)
        for step, (ids, mask, labels) in enumerate(_batches(examples, config, pad_id), start=1):
            step_start = time.perf_counter()
            rate = learning_rate_at(step - 1, config)
            for group in optimizer.param_groups:
                group["lr"] = rate
            loss, _ = causal_lm_loss(model, ids, mask, labels)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            record = StepRecord(step, loss.item(), rate, grad_norm, int(mask.sum()), time.perf_counter() - step_start)
            run_log.steps.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record.loss:.3f}", refresh=False)
            if step % log_every == 0 or step == 1 or step == config.steps:
                log.info(
                    "finetune step %d/%d loss %.4f lr %.2e grad-norm %.2f %.0f tok/s",
                    step,
                    config.steps,
                    record.loss,
                    rate,
                    grad_norm,
                    record.tokens / record.seconds,
                )
            if step in save_at:
                k = save_at[step]
                previous = max((s for s in save_at if s < step), default=0)
                window = run_log.losses[previous:step]
                state = {
                    "step": step,
                    "steps": config.steps,
                    "checkpoint": k,
                    "n_checkpoints": config.n_checkpoints,
                    "loss": sum(window) / len(window),
                    "last_step_loss": record.loss,
                    "seed": config.seed,
                    "examples_seen": step * config.batch_size,
                    "config": asdict(config),
                    "base_model": run_log.base_model,
                    "loss_curve": run_log.losses,
                    "tokenscope_version": __version__,
                }
                model.eval()
                saved.append(
                    save_checkpoint(model, tokenizer, output_dir / checkpoint_name(k, config.n_checkpoints), state)
                )
                model.train()
                run_log.checkpoints.append(saved[-1].name)
                log.info("finetune: saved %s (step %d, mean loss %.4f)", saved[-1].name, step, state["loss"])
        bar.close()
        run_log.train_seconds = time.perf_counter() - started
    write_json(asdict(run_log), output_dir / TRAINING_LOG)
    return saved


def read_training_log(output_dir: str | Path) -> dict[str, Any]:
    """The `training_log.json` of a finished run."""
    return json.loads((Path(output_dir) / TRAINING_LOG).read_text())
