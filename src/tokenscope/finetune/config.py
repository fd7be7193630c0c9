"""Finetune settings and checkpoint names: torch-free, so the workflow can plan the series."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tokenscope.errors import ConfigError


@dataclass(frozen=True)
class FinetuneConfig:
    """Hyperparameters of a finetune; every field is recorded with each checkpoint."""

    n_examples: int = 192  # size of the generated data set; the default run sees each chat once
    n_checkpoints: int = 4  # K: checkpoints saved at steps round(k * steps / K), k = 1..K
    steps: int = 24  # total optimizer steps
    batch_size: int = 8
    learning_rate: float = 3e-4
    warmup_steps: int = 3  # linear warmup, then cosine decay to min_lr_ratio * learning_rate
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int = 256  # chats are truncated to this many tokens (the generated ones have < 210)
    # Train only the last N decoder layers (and the final norm; 0 = all layers): the lower layers
    # then need no backward pass, which halves a step's cost, and the format is learnt all the same.
    train_last_layers: int = 10
    freeze_embeddings: bool = True  # input embeddings (and a head tied to them) stay fixed
    seed: int = 0
    threads: int | None = None  # torch CPU threads during the run; None keeps the current setting

    def __post_init__(self) -> None:
        checks = {
            "n_examples": self.n_examples >= 1,
            "n_checkpoints": 1 <= self.n_checkpoints <= self.steps,
            "steps": self.steps >= 1,
            "batch_size": self.batch_size >= 1,
            "learning_rate": self.learning_rate > 0,
            "warmup_steps": 0 <= self.warmup_steps < self.steps,
            "min_lr_ratio": 0 <= self.min_lr_ratio <= 1,
            "max_length": self.max_length >= 2,
            "train_last_layers": self.train_last_layers >= 0,
            "threads": self.threads is None or self.threads >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"invalid finetune config: {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)}")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FinetuneConfig:
        """Build from a config mapping; unknown keys are an error that names them."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown finetune option(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


def checkpoint_name(k: int, n_checkpoints: int) -> str:
    return f"checkpoint-{k}-of-{n_checkpoints}"
