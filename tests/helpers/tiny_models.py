"""Tiny random models built from a config and saved locally (no network): a byte-level BPE
tokenizer with ChatML special tokens, Llama, Qwen2 (also with sliding-window attention) and GPT-2;
in memory (`tiny_model`), sliding-window layouts of Mistral, Qwen2, Gemma 2/3 and GPT-OSS and
layouts the decode loop refuses."""

from __future__ import annotations

from pathlib import Path

import torch

ARCHS = ["llama", "qwen2", "gpt2"]
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
CORPUS = [
    "The quick brown fox jumps over the lazy dog. What is 2 + 2? The answer is 4.",
    "Think step by step. <think> 17 + 25 = 42 </think> The final answer is \\boxed{42}.",
    "Héllo wörld, naïve café: ∑ x² ≤ π · 日本語 テキスト 🙂 — done.",
    "Consider the function f(x) = x^2 on the interval [0, 2]. Find the area under the curve.",
] * 20


def build_tokenizer(vocab_size: int = 400):
    """A small byte-level BPE tokenizer with ChatML special tokens, trained in milliseconds."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        CORPUS, vocab_size=vocab_size, min_frequency=1, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token="<|im_start|>",
    )
    tokenizer.chat_template = CHATML
    return tokenizer


def tiny_config(arch: str, vocab_size: int, eos_id: int, pad_id: int, positions: int = 1024):
    from transformers import GPT2Config, LlamaConfig, Qwen2Config

    common = dict(vocab_size=vocab_size, eos_token_id=eos_id, pad_token_id=pad_id, bos_token_id=eos_id)
    if arch == "llama":
        return LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=positions,
            initializer_range=0.3,
            **common,
        )
    if arch == "qwen2":
        return Qwen2Config(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=positions,
            initializer_range=0.3,
            tie_word_embeddings=False,
            **common,
        )
    if arch == "qwen2-sliding":  # all layers sliding-window
        return Qwen2Config(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=positions,
            initializer_range=0.3,
            use_sliding_window=True,
            sliding_window=24,
            max_window_layers=0,
            **common,
        )
    if arch == "gpt2":
        return GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=positions, initializer_range=0.3, **common)
    if arch in SLIDING_ARCHS or arch in UNSUPPORTED_ARCHS:
        return sliding_config(arch, common, positions)
    raise ValueError(arch)


# Sliding-window layouts for the batched decode tests (tests/unit/generation/test_sliding_window.py):
# windows (5 to 16 positions) shorter than most prompts and than prompt + generation.
SLIDING_ARCHS = ["mistral-sliding", "qwen2-mixed", "gemma2-mixed", "gemma3-mixed", "gpt-oss-mixed"]
# Layouts the decode loop refuses, each with what its one-line error names.
UNSUPPORTED_ARCHS = {
    "llama4-chunked": "chunked_attention",
    "qwen3-next-linear": "linear_attention",
    "gemma3-bidirectional": "bidirectional attention",
}


def sliding_config(arch: str, common: dict, positions: int = 1024):
    """Tiny configs of sliding-window attention models: all layers sliding (Mistral), the first
    full and the rest sliding (Qwen2's max_window_layers), sliding and global layers alternating
    (Gemma 2 with logit softcapping, Gemma 3 with local/global RoPE, GPT-OSS with attention sinks
    and experts); and of layouts the decode loop refuses."""
    from transformers import (
        Gemma2Config,
        Gemma3TextConfig,
        GptOssConfig,
        Llama4TextConfig,
        MistralConfig,
        Qwen2Config,
        Qwen3NextConfig,
    )

    small = dict(
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=positions,
        initializer_range=0.3,
        **common,
    )
    if arch == "mistral-sliding":
        return MistralConfig(num_hidden_layers=2, sliding_window=7, **small)
    if arch == "qwen2-mixed":
        return Qwen2Config(num_hidden_layers=3, use_sliding_window=True, sliding_window=9, max_window_layers=1, **small)
    if arch == "gemma2-mixed":  # eager attention (softcapping), additive float masks
        return Gemma2Config(
            num_hidden_layers=4,
            head_dim=8,
            sliding_window=6,
            attn_logit_softcapping=50.0,
            final_logit_softcapping=30.0,
            attn_implementation="eager",
            **small,
        )
    if arch == "gemma3-mixed":
        return Gemma3TextConfig(
            num_hidden_layers=3,
            head_dim=8,
            sliding_window=5,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"],
            **small,
        )
    if arch == "gpt-oss-mixed":
        return GptOssConfig(
            num_hidden_layers=2,
            head_dim=8,
            sliding_window=16,
            num_local_experts=4,
            num_experts_per_tok=2,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            attn_implementation="eager",
            **small,
        )
    if arch == "llama4-chunked":
        return Llama4TextConfig(
            num_hidden_layers=2,
            head_dim=8,
            attention_chunk_size=8,
            num_local_experts=2,
            intermediate_size_mlp=64,
            **small,
        )
    if arch == "qwen3-next-linear":
        return Qwen3NextConfig(num_hidden_layers=2, head_dim=8, **small)
    if arch == "gemma3-bidirectional":
        return Gemma3TextConfig(
            num_hidden_layers=2, head_dim=8, sliding_window=6, use_bidirectional_attention=True, **small
        )
    raise ValueError(arch)


def tiny_model(arch: str, seed: int = 0, vocab_size: int = 400, positions: int = 1024):
    """(model, tokenizer) of a tiny random model built in memory from `tiny_config` (float32, eval)."""
    from transformers import AutoModelForCausalLM

    tokenizer = build_tokenizer(vocab_size)
    config = tiny_config(arch, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, positions)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def save_tiny_checkpoint(
    folder: Path, arch: str = "llama", seed: int = 0, vocab_size: int = 400, positions: int = 1024
) -> Path:
    """A Hugging Face checkpoint folder (safetensors + tokenizer) of a tiny random model with
    `positions` positions (max_position_embeddings, GPT-2's n_positions)."""
    from transformers import AutoModelForCausalLM

    tokenizer = build_tokenizer(vocab_size)
    config = tiny_config(arch, len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, positions)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
