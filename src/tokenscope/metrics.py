"""Per-token metrics from raw logits, in fp32, over chunks of positions.

Definitions follow the seed notebook: entropy is the Shannon entropy (nats) of softmax of the raw
logits over the full vocabulary; prob/logprob are those of the observed next token under the same
distribution; rank is 1 + the number of vocabulary entries with a strictly larger logit.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class TokenMetrics:
    """Metrics for N scored positions (tensors on the device they were computed on)."""

    entropy: Tensor  # [N] float32
    logprob: Tensor  # [N] float32
    rank: Tensor  # [N] int32
    topk_ids: Tensor  # [N, k] int32
    topk_logprobs: Tensor  # [N, k] float32

    @property
    def prob(self) -> Tensor:
        return self.logprob.exp()

    @staticmethod
    def cat(parts: list["TokenMetrics"]) -> "TokenMetrics":
        return TokenMetrics(*(torch.cat([getattr(p, f) for p in parts]) for f in TokenMetrics.__dataclass_fields__))

    def to(self, device: torch.device | str) -> "TokenMetrics":
        return TokenMetrics(*(getattr(self, f).to(device) for f in TokenMetrics.__dataclass_fields__))


def metrics_from_logits(logits: Tensor, targets: Tensor, top_k: int) -> TokenMetrics:
    """Metrics of `targets` [N] under raw `logits` [N, V]; upcasts to fp32 first."""
    logits = logits.float()
    log_norm = torch.logsumexp(logits, dim=-1, keepdim=True)
    logp = logits - log_norm
    p = logp.exp()
    # p * logp is nan where a logit is -inf (p = 0); such entries contribute 0 to the entropy.
    entropy = -torch.where(p > 0, p * logp, torch.zeros((), device=p.device)).sum(-1)
    target_logits = logits.gather(1, targets.view(-1, 1).long())
    rank = (logits > target_logits).sum(-1, dtype=torch.int32) + 1
    k = min(top_k, logits.shape[-1])
    top_values, top_ids = logits.topk(k, dim=-1) if k > 0 else (logits[:, :0], logits[:, :0].long())
    return TokenMetrics(
        entropy=entropy,
        logprob=(target_logits - log_norm).squeeze(1),
        rank=rank,
        topk_ids=top_ids.int(),
        topk_logprobs=top_values - log_norm,
    )


class Unembedding(nn.Module):
    """Final hidden states -> fp32 logits, as the model's own head computes them.

    Uses the model's output embedding found through the transformers API (not module names of
    one architecture), and applies the logit scaling some architectures add after the head.
    With low-precision weights the product is done in fp32 so that metrics see fp32 logits.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        head = model.get_output_embeddings()
        if head is None or not hasattr(head, "weight"):
            raise ValueError(f"{type(model).__name__} exposes no output embedding (get_output_embeddings)")
        self.weight = head.weight
        self.bias = getattr(head, "bias", None)
        self.fp32_weight = self.weight if self.weight.dtype == torch.float32 else None
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.softcap = getattr(config, "final_logit_softcapping", None)
        self.scale = getattr(config, "logit_scale", None)

    def forward(self, hidden: Tensor) -> Tensor:
        if self.weight.dtype in (torch.float32, torch.float64):
            logits = nn.functional.linear(hidden.to(self.weight.dtype), self.weight, self.bias).float()
        else:
            if self.fp32_weight is None:
                self.fp32_weight = self.weight.float()
            bias = None if self.bias is None else self.bias.float()
            logits = nn.functional.linear(hidden.float(), self.fp32_weight, bias)
        if self.scale is not None:
            logits = logits * self.scale
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


def backbone(model: nn.Module) -> nn.Module:
    """The model without its head: returns final (normalized) hidden states."""
    return model.base_model


def check_unembedding(model: nn.Module, unembed: Unembedding, vocab_size: int) -> None:
    """Fail loudly if backbone + Unembedding does not reproduce the model's own logits.

    Architectures that post-process logits in ways this class does not know would otherwise give
    silently wrong metrics.
    """
    device = next(model.parameters()).device
    probe = torch.arange(1, 9, device=device).clamp(max=vocab_size - 1).unsqueeze(0)
    with torch.no_grad():
        expected = model(input_ids=probe).logits.float()
        got = unembed(backbone(model)(input_ids=probe).last_hidden_state)
    tolerance = 1e-3 * max(1.0, expected.abs().max().item())
    if next(model.parameters()).dtype != torch.float32 and next(model.parameters()).dtype != torch.float64:
        tolerance *= 50  # the model's own low-precision head rounds its logits
    error = (expected - got).abs().max().item()
    if error > tolerance:
        raise ValueError(
            f"{type(model).__name__}: backbone + output embedding differ from the model's logits "
            f"by {error:.3g}; this architecture post-processes logits in an unsupported way"
        )


def chunked_metrics(hidden: Tensor, targets: Tensor, unembed: Unembedding, top_k: int, chunk_rows: int) -> TokenMetrics:
    """Metrics for N hidden states [N, H], never materializing more than chunk_rows x V logits."""
    parts = [
        metrics_from_logits(unembed(hidden[start : start + chunk_rows]), targets[start : start + chunk_rows], top_k)
        for start in range(0, hidden.shape[0], chunk_rows)
    ]
    if not parts:
        empty = hidden.new_zeros((0,), dtype=torch.float32)
        return TokenMetrics(empty, empty, empty.int(), empty.new_zeros((0, top_k)).int(), empty.new_zeros((0, top_k)))
    return TokenMetrics.cat(parts)
