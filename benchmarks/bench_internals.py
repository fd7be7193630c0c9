#!/usr/bin/env python
"""Peak memory and time of each internals analysis on one long sequence (default 2,048 tokens).

Each analysis runs in its own subprocess (this script with --role), so each peak RSS is that
analysis's alone. A `baseline` role loads the model and runs one plain forward pass over the
sequence (sdpa attention, no hooks): the other figures are to be read against it. For scale, the
script also prints what keeping every layer's full attention matrices would take.

    python benchmarks/bench_internals.py                  # embedded model, 2048 tokens
    python benchmarks/bench_internals.py --tokens 512
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

ROLES = ("baseline", "marker_attention", "attention_positions", "depth_convergence_and_logit_lens")


def long_sequence(tokenizer, n_tokens: int) -> list[int]:
    """The math24 prompts' text, repeated until it has n_tokens tokens."""
    from tokenscope.inputs.prompts import load_prompt_set

    text = " ".join(p.messages[-1]["content"] for p in load_prompt_set(REPO / "config" / "prompts" / "math24.jsonl"))
    ids: list[int] = []
    while len(ids) < n_tokens:
        ids += tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[:n_tokens]


def run_role(role: str, model_dir: str, n_tokens: int, threads: int) -> dict[str, float]:
    import numpy as np
    import torch

    from tokenscope.internals.measures import (
        attention_received,
        convergence_distances,
        depth_states,
        logit_lens,
        marker_attention,
    )
    from tokenscope.model.loading import LoadOptions, load_prepared
    from tokenscope.workflow.jobs import return_freed_memory

    return_freed_memory()  # as the workflow's rule scripts do
    torch.set_num_threads(threads)
    model, tokenizer = load_prepared(model_dir, LoadOptions(device="cpu", dtype="float32"))
    ids = long_sequence(tokenizer, n_tokens)
    loaded_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    with torch.no_grad():
        if role == "baseline":
            model.base_model(input_ids=torch.tensor([ids]))
        elif role == "marker_attention":
            mask = np.arange(len(ids)) % 50 == 0
            marker_attention(model, [ids], [mask], [0], show_progress=False)
        elif role == "attention_positions":
            attention_received(model, ids, [(1, 1), (1, 2), (1, 8)])
        else:
            states = depth_states(model, ids)
            convergence_distances(states)
            logit_lens(model, states, chunk_rows=512)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_rss_mib": peak, "loaded_rss_mib": loaded_rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", help="a prepared model folder (default: the embedded model, prepared once)")
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--role", choices=ROLES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        print(json.dumps(run_role(args.role, args.model_dir, args.tokens, args.threads)))
        return
    if not args.model_dir:
        from tokenscope.model.sources import ModelSpec, default_cache_dir, prepare_model

        out = default_cache_dir() / "benchmarks" / "SmolLM2-135M-Instruct"
        if not (out / "manifest.json").exists():
            prepare_model(ModelSpec(name="smollm2", kind="embedded", location="SmolLM2-135M-Instruct"), out)
        args.model_dir = str(out)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(args.model_dir).get_text_config()
    all_attention = config.num_hidden_layers * config.num_attention_heads * args.tokens**2 * 4 / 2**20
    print(
        f"# {args.model_dir}: {config.num_hidden_layers} layers, {config.num_attention_heads} heads; "
        f"{args.tokens} tokens, {args.threads} threads, fp32 on cpu"
    )
    print(f"# every layer's attention matrices at once would be {all_attention:.0f} MiB")
    for role in ROLES:
        command = [
            sys.executable,
            __file__,
            "--role",
            role,
            "--model-dir",
            args.model_dir,
            "--tokens",
            str(args.tokens),
            "--threads",
            str(args.threads),
        ]
        result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
        print(
            f"{role:34s} {result['seconds']:7.2f} s   peak RSS {result['peak_rss_mib']:7.0f} MiB "
            f"(+{result['peak_rss_mib'] - result['loaded_rss_mib']:.0f} over the loaded model)"
        )


if __name__ == "__main__":
    main()
