"""Loading prepared model folders: device, dtype, model and tokenizer, checked against the model's logits."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenscope.errors import ModelError
from tokenscope.model.sources import MANIFEST

if TYPE_CHECKING:  # torch is imported lazily: the workflow's DAG code imports this package without it
    import torch

    from tokenscope.model.types import CausalLM, Tokenizer


def resolve_device(device: str = "auto") -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available")
    return resolved


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """`auto` is fp32 on CPU and bf16 on GPU; metrics are always computed from fp32 logits."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return {
            "float32": torch.float32,
            "bfloat16": torch.bfloat16,
            "float16": torch.float16,
            "float64": torch.float64,
        }[dtype]
    except KeyError:
        raise ModelError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16, float16 or float64") from None


@dataclass(frozen=True)
class LoadOptions:
    device: str = "auto"
    dtype: str = "auto"
    attn_implementation: str | None = "sdpa"
    device_map: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


POSITION_KEYS = ("max_position_embeddings", "n_positions")


def max_positions(model_or_config: Any) -> int | None:
    """The most positions a model declares (config `max_position_embeddings` or `n_positions`, or
    its text config's), or None when it declares none (then nothing is checked against it).

    Accepts a model (reads its `config`) or a config; torch-free.
    """
    config = getattr(model_or_config, "config", model_or_config)
    configs = [config]
    get_text_config = getattr(config, "get_text_config", None)
    if callable(get_text_config):
        configs.append(get_text_config())
    for candidate in configs:
        for key in POSITION_KEYS:
            value = getattr(candidate, key, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _prepared_manifest(model_dir: Path) -> dict[str, Any]:
    manifest_path = model_dir / MANIFEST
    if not manifest_path.exists():
        raise ModelError(f"{model_dir}: not a prepared model folder (no {MANIFEST})")
    return json.loads(manifest_path.read_text())


def load_prepared_tokenizer(model_dir: str | Path) -> Tokenizer:
    """The tokenizer of a prepared model folder (remote code only where its manifest allows it)."""
    from transformers import AutoTokenizer

    model_dir = Path(model_dir)
    trust = bool(_prepared_manifest(model_dir).get("trust_remote_code", False))
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_prepared(model_dir: str | Path, options: LoadOptions = LoadOptions()) -> tuple[CausalLM, Tokenizer]:
    """Load a prepared model folder (safetensors only) and its tokenizer, in eval mode."""
    from transformers import AutoModelForCausalLM

    model_dir = Path(model_dir)
    trust = bool(_prepared_manifest(model_dir).get("trust_remote_code", False))
    device = resolve_device(options.device)
    dtype = resolve_dtype(options.dtype, device)
    kwargs: dict[str, Any] = {"dtype": dtype, "use_safetensors": True, "trust_remote_code": trust}
    if options.attn_implementation:
        kwargs["attn_implementation"] = options.attn_implementation
    if options.device_map:
        kwargs["device_map"] = options.device_map
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if not options.device_map:
        # transformers wraps .to() with functools.wraps(nn.Module.to), which mypy reads as unbound
        model = model.to(device)  # type: ignore[arg-type]
    model.eval()
    return model, load_prepared_tokenizer(model_dir)


def load_model(model_dir: str | Path, options: LoadOptions = LoadOptions()) -> tuple[CausalLM, Tokenizer]:
    """load_prepared, then check that backbone + unembedding reproduce the model's own logits."""
    from tokenscope.model.anatomy import Unembedding, check_unembedding

    model, tokenizer = load_prepared(model_dir, options)
    check_unembedding(model, Unembedding(model), len(tokenizer))
    return model, tokenizer
