#!/usr/bin/env python
"""Generation throughput of a tiny sliding-window model at batch 1 and batch 16, in one process.

The model is random (hidden 64, vocabulary 2000, the tokenizer of bench_generation_memory) with
a Gemma-style mix of layers by default: sliding-window layers (window 32) and one full-attention
layer, from a Qwen2 config (`use_sliding_window`, `max_window_layers`); `--layout sliding` makes
every layer sliding (Mistral-style). Prompts of 3-40 words (about 10-90 tokens), so windows are
shorter than most prompts and than every prompt + its answer. Each batch size generates the same
requests (prompts x samples, sampled at temperature 1), so the tokens are the same; the figures
are generated tokens per second of `generate` and the KV cache bytes per row its waves allocated
(sliding-window layers hold only window + window_slack columns; the figure if every layer held all
of the wave's columns next to it), then the peak RSS, and last the ratio of batch 16 to batch 1
(the target is >= 5x on such a tiny model).

    python benchmarks/bench_sliding.py                    # 32 requests, 64 new tokens
    python benchmarks/bench_sliding.py --requests 64 --max-new-tokens 128 --threads 2
    python benchmarks/bench_sliding.py --window 128 --max-new-tokens 1024 --batch-sizes 16
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_generation_memory import SAMPLES, build, prompts  # noqa: E402


def sliding_model(tokenizer: Any, layout: str, window: int, layers: int, seed: int = 0) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        initializer_range=0.3,
        use_sliding_window=True,
        sliding_window=window,
        max_window_layers=1 if layout == "mixed" else 0,  # layers below it use full attention
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--layout", choices=["mixed", "sliding"], default="mixed")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from tokenscope.generation import decode
    from tokenscope.generation.decode import DecodeOptions, generate
    from tokenscope.generation.kv_cache import attention_windows, build_cache
    from tokenscope.generation.run import generation_requests
    from tokenscope.generation.sampling import SamplingParams

    torch.set_num_threads(args.threads)
    _, tokenizer = build()
    model = sliding_model(tokenizer, args.layout, args.window, args.layers)
    requests = generation_requests(tokenizer, prompts(max(1, args.requests // SAMPLES)), SAMPLES, seed=0)
    params = SamplingParams(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=args.max_new_tokens)
    eos = (tokenizer.eos_token_id,)  # random weights rarely choose it: nearly every row runs to the budget
    lengths = [len(r.prompt_ids) for r in requests]
    print(
        f"tiny Qwen2 ({args.layout}: windows {attention_windows(model)}), hidden 64, vocab {len(tokenizer)}, "
        f"{len(requests)} requests, prompts {min(lengths)}-{max(lengths)} tokens, "
        f"max_new_tokens {args.max_new_tokens}, {args.threads} thread(s)"
    )
    generate(
        model, tokenizer, requests[:2], params, DecodeOptions(batch_size=2, eos_ids=eos, show_progress=False)
    )  # warm up
    caches: list[tuple[float, float]] = []  # per wave: KV bytes per row held, and if all layers held every column

    def logged_build_cache(groups, n_rows, width, columns, windows):  # type: ignore[no-untyped-def]
        cache = build_cache(groups, n_rows, width, columns, windows)
        held = sum(2 * layer.key_buffer.numel() * layer.key_buffer.element_size() for layer in cache.layers)
        per_column = held / sum(layer.key_buffer.shape[2] for layer in cache.layers)
        caches.append((held / n_rows, per_column * columns * len(cache.layers) / n_rows))
        return cache

    decode.build_cache = logged_build_cache  # type: ignore[assignment]
    rates: dict[int, float] = {}
    tokens: dict[int, list[list[int]]] = {}
    for batch_size in args.batch_sizes:
        caches.clear()
        start = time.perf_counter()
        generations = generate(
            model, tokenizer, requests, params, DecodeOptions(batch_size=batch_size, eos_ids=eos, show_progress=False)
        )
        seconds = time.perf_counter() - start
        n = sum(len(g.token_ids) for g in generations)
        rates[batch_size] = n / seconds
        tokens[batch_size] = [g.token_ids.tolist() for g in generations]
        held, every_column = max(caches)
        print(
            f"batch {batch_size:>3}: {n} tokens in {seconds:.2f} s = {rates[batch_size]:.1f} tokens/s; "
            f"KV bytes per row {held:,.0f} ({every_column:,.0f} if every layer held every column)",
            flush=True,
        )
    first, last = args.batch_sizes[0], args.batch_sizes[-1]
    same = all(tokens[b] == tokens[first] for b in args.batch_sizes)
    print(f"same tokens at every batch size: {same}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")
    print(f"batch {last} / batch {first}: {rates[last] / rates[first]:.2f}x")


if __name__ == "__main__":
    main()
