#!/usr/bin/env python
"""Speed and memory of the reference notebook pipeline against tokenscope's, same model and settings.

Prints one labelled figure per line:

  [1] the reference notebook pipeline end to end (model.generate one prompt at a time, a second
      forward pass over each sequence, a Python loop over its positions): tokens/s, wall, peak RSS
  [2] tokenscope's run_generation end to end (batched decode that scores its own tokens, and the
      Arrow tables): tokens/s, wall, peak RSS
  [3] tokenscope generation tokens/s at several batch sizes
  [4] teacher-forced scoring (score_token_sequences) of the sequences of [2] against a bare backbone
      forward pass over the same padded batches (and a full forward computing all logits)
  [6] where a decode step's time goes (backbone forward split into attention, SDPA kernel, MLPs
      and the rest; unembedding, sampling, metrics, packing + host transfer, bookkeeping, prefill):
      ms per step and share of the loop's wall, timed by wrappers and hooks this script installs
      around the decode module's functions and the model's modules (no timers in the library)
  [7] the fp32 compute bound: F.linear GFLOP/s at the model's weight shapes and the decode batch,
      divided by the model's FLOPs per generated token (2 x non-embedding params + 2 x hidden x
      vocab + attention over the mean context), and the fraction of it the decode loop reaches
  [5] last line: tokenscope / reference notebook pipeline end-to-end generated tokens/s

Tokens/s is always per generated (or scored) token: the count is the number of per-token rows each
pipeline produced (eos included when generated) and is printed next to each figure. Each pipeline
runs in its own subprocess (this script with --role), so the process-wide peak RSS of one does not
include the other's. Model loading is not timed; one short warm-up call precedes each timed run.

    python benchmarks/bench_pipeline.py            # full run, a few minutes on 2 CPU cores
    python benchmarks/bench_pipeline.py --quick    # smoke run, about a minute
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # runs from a checkout without an installed package too

DEFAULT_MODEL = "embedded:SmolLM2-135M-Instruct"
DEFAULT_PROMPTS = REPO / "config" / "prompts" / "math24.jsonl"


# --------------------------------------------------------------------------------------------
# The reference notebook pipeline, copied as is; adapted only to take model/tokenizer/device and
# max_new_tokens/sampling as arguments instead of notebook globals.
# --------------------------------------------------------------------------------------------


def get_stats_for_generation(model, tokenizer, generated_ids, prompt_length, device):
    import pandas as pd
    import torch
    import torch.nn.functional as F

    inputs = {"input_ids": generated_ids.to(device)}
    with torch.no_grad():
        outputs = model(**inputs, output_hidden_states=False, output_attentions=False)
        logits = outputs.logits
    stats = []
    for j in range(prompt_length - 1, generated_ids.shape[1] - 1):
        pos_logits = logits[0, j, :]
        entropy = torch.distributions.Categorical(logits=pos_logits).entropy().item()
        actual_next_token_id = generated_ids[0, j + 1]
        probabilities = F.softmax(pos_logits, dim=-1)
        prob_of_chosen_token = probabilities[actual_next_token_id].item()
        current_token_str = tokenizer.decode(generated_ids[0, j])
        next_token_str = tokenizer.decode(actual_next_token_id)
        stats.append(
            {
                "position": j,
                "current_token": current_token_str,
                "next_token": next_token_str,
                "entropy": entropy,
                "probability_of_next_token": prob_of_chosen_token,
            }
        )
    return pd.DataFrame(stats)


def seed_process_prompt(model, tokenizer, prompt, device, max_new_tokens, sampling, timings=None):
    """One prompt of the reference notebook pipeline: chat template, generate, second forward, stats."""
    clock = _Clock(device)
    formatted_prompt = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    inputs = tokenizer(formatted_prompt, return_tensors="pt").to(device)
    prompt_length = inputs.input_ids.shape[1]
    generated_ids = model.generate(
        inputs.input_ids,
        attention_mask=inputs.attention_mask,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.eos_token_id,
        do_sample=sampling["do_sample"],
        temperature=sampling["temperature"],
        top_p=sampling["top_p"],
        top_k=sampling["top_k"],
    )
    generate_s = clock.lap()
    stats = get_stats_for_generation(model, tokenizer, generated_ids, prompt_length, device)
    stats_s = clock.lap()
    if timings is not None:
        timings["generate_s"] += generate_s
        timings["stats_s"] += stats_s
        timings["prompt_tokens"] += prompt_length
    return stats


# --------------------------------------------------------------------------------------------
# Measurement helpers
# --------------------------------------------------------------------------------------------


class _Clock:
    """perf_counter laps that wait for the GPU first."""

    def __init__(self, device) -> None:
        self.device = device
        self.last = self._now()

    def _now(self) -> float:
        _sync(self.device)
        return time.perf_counter()

    def lap(self) -> float:
        now = self._now()
        elapsed, self.last = now - self.last, now
        return elapsed


def _sync(device) -> None:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        torch.cuda.synchronize(device)


def _current_rss_mib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return None


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def _reset_gpu_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _gpu_peak_mib(device) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _sampling(config: dict[str, Any]) -> dict[str, Any]:
    return {
        "do_sample": config["do_sample"],
        "temperature": config["temperature"],
        "top_p": config["top_p"],
        "top_k": config["top_k"],
    }


def _setup(config: dict[str, Any]):
    """Threads, model and prompts of a worker process."""
    import torch

    from tokenscope.inputs.prompts import load_prompt_set
    from tokenscope.model.loading import LoadOptions, load_model, resolve_device

    torch.set_num_threads(config["threads"])
    device = resolve_device(config["device"])
    model, tokenizer = load_model(config["model_dir"], LoadOptions(device=config["device"], dtype=config["dtype"]))
    prompts = load_prompt_set(config["prompts"])
    return torch, device, model, tokenizer, prompts


# --------------------------------------------------------------------------------------------
# Worker roles (each in its own process)
# --------------------------------------------------------------------------------------------


def role_seed(config: dict[str, Any]) -> dict[str, Any]:
    torch, device, model, tokenizer, prompts = _setup(config)
    prompts = prompts[: config["seed_prompts"]]
    sampling = _sampling(config)
    rss_loaded = _current_rss_mib()
    # Warm-up: a few tokens of the first prompt through the whole reference notebook pipeline.
    torch.manual_seed(config["seed"])
    seed_process_prompt(model, tokenizer, list(prompts[0].messages), device, 4, sampling)
    _reset_gpu_peak(device)

    torch.manual_seed(config["seed"])
    timings = {"generate_s": 0.0, "stats_s": 0.0, "prompt_tokens": 0}
    clock = _Clock(device)
    frames = [
        seed_process_prompt(model, tokenizer, list(p.messages), device, config["max_new_tokens"], sampling, timings)
        for p in prompts
    ]
    wall = clock.lap()
    tokens = sum(len(f) for f in frames)
    return {
        "prompts": [p.id for p in prompts],
        "tokens": tokens,
        "wall_s": wall,
        "generate_s": timings["generate_s"],
        "stats_s": timings["stats_s"],
        "mean_prompt_tokens": timings["prompt_tokens"] / len(prompts),
        "rss_loaded_mib": rss_loaded,
        "peak_rss_mib": _peak_rss_mib(),
        "gpu_peak_mib": _gpu_peak_mib(device),
        "threads": torch.get_num_threads(),
    }


def _padded_batches(sequences, batch_size: int, pad_id: int, device):
    """score_sequences' batching: sorted by length (longest first), right padding."""
    from tokenscope.inputs.batching import length_sorted_batches, pad

    for rows in length_sorted_batches([len(s) for s in sequences], batch_size):
        yield pad([sequences[i] for i in rows], pad_id, "right", device)


class _Breakdown:
    """Where a decode loop's wall time goes, measured from outside the library: wrappers around the
    decode module's functions and forward hooks on the model, removed afterwards (no timers in
    tokenscope itself). Parts nest: the backbone forward of decode steps holds the attention
    modules (which hold the SDPA kernel) and the MLPs; `_Decoder.step` holds the unembedding,
    sampling and metrics. On CUDA every timer synchronises the device (slower, but attributed).
    """

    def __init__(self, model: Any, device: Any) -> None:
        self.model, self.device = model, device
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.decoding = False  # inside the backbone forward of a one-token decode step

    def _now(self) -> float:
        _sync(self.device)
        return time.perf_counter()

    def _add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds
        self.calls[name] = self.calls.get(name, 0) + 1

    def _wrap(self, name: str, fn: Any, decode_only: bool = False) -> Any:
        import functools

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if decode_only and not self.decoding:
                return fn(*args, **kwargs)
            start = self._now()
            try:
                return fn(*args, **kwargs)
            finally:
                self._add(name, self._now() - start)

        return timed

    def _time_module(self, module: Any, name: str, decode_only: bool) -> list[Any]:
        starts: list[float] = []

        def before(mod: Any, args: Any, kwargs: Any) -> None:
            if decode_only and not self.decoding:
                return
            starts.append(self._now())

        def after(mod: Any, args: Any, kwargs: Any, output: Any) -> None:
            if starts:
                self._add(name, self._now() - starts.pop())

        return [
            module.register_forward_pre_hook(before, with_kwargs=True),
            module.register_forward_hook(after, with_kwargs=True),
        ]

    def installed(self) -> Any:
        import contextlib

        import torch

        from tokenscope.generation import decode, kv_cache
        from tokenscope.model.anatomy import Unembedding, backbone, model_anatomy

        @contextlib.contextmanager
        def context() -> Any:
            patches: list[tuple[Any, str, Any]] = []

            def patch(owner: Any, attribute: str, name: str, decode_only: bool = False) -> None:
                original = getattr(owner, attribute, None)
                if original is not None:
                    patches.append((owner, attribute, original))
                    setattr(owner, attribute, self._wrap(name, original, decode_only))

            body = backbone(self.model)
            phase_start: list[float] = []

            def body_before(mod: Any, args: Any, kwargs: Any) -> None:
                ids = kwargs.get("input_ids", args[0] if args else None)
                self.decoding = ids is not None and ids.shape[1] == 1
                phase_start.append(self._now())

            def body_after(mod: Any, args: Any, kwargs: Any, output: Any) -> None:
                self._add("forward" if self.decoding else "prefill_forward", self._now() - phase_start.pop())
                self.decoding = False

            hooks = [
                body.register_forward_pre_hook(body_before, with_kwargs=True),
                body.register_forward_hook(body_after, with_kwargs=True),
            ]
            anatomy = model_anatomy(self.model)
            for attention in anatomy.attentions:
                hooks += self._time_module(attention, "attention", decode_only=True)
            for layer in anatomy.layers:
                mlp = getattr(layer, "mlp", None) or getattr(layer, "feed_forward", None)
                if mlp is not None:
                    hooks += self._time_module(mlp, "mlp", decode_only=True)
            patch(torch.nn.functional, "scaled_dot_product_attention", "sdpa", decode_only=True)
            modeling = sys.modules[type(body).__module__]
            for builder in ("create_causal_mask", "create_sliding_window_causal_mask"):
                patch(modeling, builder, "mask", decode_only=True)
            patch(Unembedding, "forward", "unembedding")
            for sampler in ("sample_with_metrics", "sample_tokens"):
                patch(decode, sampler, "sampling")
            patch(decode, "metrics_from_logits", "metrics")
            patch(decode._Decoder, "step", "step")
            patch(decode._Decoder, "finish", "finish")
            patch(decode._Decoder, "prefill", "prefill")
            for method in ("keep_rows", "drop_leading", "write_rows"):
                patch(kv_cache.PreallocatedLayer, method, "cache_rows")
            try:
                yield self
            finally:
                for hook in hooks:
                    hook.remove()
                for owner, attribute, original in reversed(patches):
                    setattr(owner, attribute, original)

        return context()


def _linear_gflops(torch: Any, model: Any, rows: int, device: Any) -> tuple[float, float]:
    """(GFLOP/s of the model's own linear layers, of its unembedding) measured with F.linear on
    random inputs of `rows` rows against the model's weights (a decode step's shapes)."""
    from tokenscope.model.anatomy import Unembedding, backbone

    def rate(weights: list[Any]) -> float:
        flops, seconds = 0.0, 0.0
        for weight in weights:
            x = torch.randn(rows, weight.shape[1], dtype=weight.dtype, device=device)
            for _ in range(2):
                torch.nn.functional.linear(x, weight)
            repeats = max(3, int(2e8 / (2 * rows * weight.numel())))
            clock = _Clock(device)
            for _ in range(repeats):
                torch.nn.functional.linear(x, weight)
            seconds += clock.lap() / repeats
            flops += 2 * rows * weight.numel()
        return flops / seconds / 1e9

    linears = [m.weight for m in backbone(model).modules() if isinstance(m, torch.nn.Linear)]
    shapes: dict[tuple[int, ...], Any] = {}
    counts: dict[tuple[int, ...], int] = {}
    for weight in linears:
        shapes.setdefault(tuple(weight.shape), weight)
        counts[tuple(weight.shape)] = counts.get(tuple(weight.shape), 0) + 1
    # weighted by how many layers have each shape: one timing per distinct shape
    flops = sum(2 * rows * shapes[s].numel() * counts[s] for s in shapes)
    seconds = sum(2 * rows * shapes[s].numel() * counts[s] / (rate([shapes[s]]) * 1e9) for s in shapes)
    return flops / seconds / 1e9, rate([Unembedding(model).weight])


def _flops_per_token(model: Any, mean_context: float) -> dict[str, float]:
    """2 x non-embedding parameters + 2 x hidden x vocab (unembedding) + attention (QK and AV)."""
    from tokenscope.model.anatomy import Unembedding, backbone

    embedding = model.get_input_embeddings().weight
    body_params = sum(p.numel() for p in backbone(model).parameters() if p is not embedding)
    config = model.config.get_text_config()
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    vocab, hidden = Unembedding(model).weight.shape
    attention = 4.0 * config.num_hidden_layers * heads * head_dim * mean_context
    return {
        "non_embedding_params": float(body_params),
        "layers": 2.0 * body_params,
        "unembedding": 2.0 * hidden * vocab,
        "attention": attention,
        "total": 2.0 * body_params + 2.0 * hidden * vocab + attention,
    }


def role_tokenscope(config: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from tokenscope.generation.decode import DecodeOptions, generate
    from tokenscope.generation.options import GenerationOptions
    from tokenscope.generation.run import generation_requests, run_generation
    from tokenscope.generation.sampling import SamplingParams
    from tokenscope.inputs.sequences import ScoredSequence
    from tokenscope.model.anatomy import backbone
    from tokenscope.scoring.options import ScoringOptions
    from tokenscope.scoring.teacher_forcing import score_token_sequences

    torch, device, model, tokenizer, prompts = _setup(config)
    ts_prompts = prompts[: config["ts_prompts"]]
    sampling = {**_sampling(config), "max_new_tokens": config["max_new_tokens"]}
    common = dict(
        model_name="bench",
        prompt_set="bench",
        scoring=ScoringOptions(n_alternatives=config["metrics_top_k"]),
        show_progress=False,
    )
    rss_loaded = _current_rss_mib()
    result: dict[str, Any] = {"rss_loaded_mib": rss_loaded, "threads": torch.get_num_threads()}

    # [2] end to end
    run_generation(
        model,
        tokenizer,
        ts_prompts[:1],
        options=GenerationOptions(
            n_samples=1, seed=config["seed"], sampling={**sampling, "max_new_tokens": 4}, batch_size=1
        ),
        **common,
    )  # warm-up
    _reset_gpu_peak(device)
    clock = _Clock(device)
    generations, tokens = run_generation(
        model,
        tokenizer,
        ts_prompts,
        options=GenerationOptions(
            n_samples=config["ts_samples"], seed=config["seed"], sampling=sampling, batch_size=config["batch_size"]
        ),
        **common,
    )
    wall = clock.lap()
    result["e2e"] = {
        "prompts": [p.id for p in ts_prompts],
        "sequences": generations.num_rows,
        "mean_prompt_tokens": float(np.mean([len(p) for p in generations.column("prompt_token_ids").to_pylist()])),
        "tokens": tokens.num_rows,
        "wall_s": wall,
        "peak_rss_mib": _peak_rss_mib(),
        "gpu_peak_mib": _gpu_peak_mib(device),
        "finished_by_eos": int(sum(r == "eos" for r in generations.column("finish_reason").to_pylist())),
    }

    # [4] teacher-forced scoring of the sequences just generated, all completion tokens
    prompt_ids = generations.column("prompt_token_ids").to_pylist()
    completion_ids = generations.column("token_ids").to_pylist()
    sequences = [
        ScoredSequence(pid, int(sample), np.asarray(p + c, dtype=np.int64), len(p), len(p))
        for pid, sample, p, c in zip(
            generations.column("prompt_id").to_pylist(),
            generations.column("sample").to_pylist(),
            prompt_ids,
            completion_ids,
            strict=True,
        )
    ]
    scored_tokens = sum(len(c) for c in completion_ids)
    context_tokens = sum(len(s.token_ids) for s in sequences)
    pad_id = tokenizer.pad_token_id or 0
    score_kwargs = dict(
        model_name="bench",
        source="bench",
        prompt_set="bench",
        options=ScoringOptions(n_alternatives=config["metrics_top_k"], batch_size=config["score_batch_size"]),
        show_progress=False,
    )
    body = backbone(model)
    raw = [s.token_ids.tolist() for s in sequences]

    def scoring() -> int:
        return score_token_sequences(model, tokenizer, sequences, **score_kwargs).num_rows

    def bare_forward() -> int:
        with torch.no_grad():
            for ids, mask in _padded_batches(raw, config["score_batch_size"], pad_id, device):
                _ = body(input_ids=ids, attention_mask=mask).last_hidden_state
        return scored_tokens

    def full_forward() -> int:
        with torch.no_grad():
            for ids, mask in _padded_batches(raw, config["score_batch_size"], pad_id, device):
                _ = model(input_ids=ids, attention_mask=mask).logits
        return scored_tokens

    # Warm-up on the first batch of sequences, then the timed runs.
    score_token_sequences(model, tokenizer, sequences[: config["score_batch_size"]], **score_kwargs)
    result["scoring"] = {"sequences": len(sequences), "tokens": scored_tokens, "context_tokens": context_tokens}
    for name, fn in (("score", scoring), ("bare", bare_forward), ("full", full_forward)):
        best = math.inf
        for _ in range(config["score_repeats"]):
            clock = _Clock(device)
            counted = fn()
            best = min(best, clock.lap())
        assert counted == scored_tokens, (name, counted, scored_tokens)
        result["scoring"][f"{name}_s"] = best

    # [3] generation tokens/s by batch size (generate() is run_generation without the tables)
    params = SamplingParams.resolve(getattr(model, "generation_config", None), sampling)
    sweep = []
    for batch_size in config["batch_sizes"]:
        n = max(batch_size, config["sweep_min_sequences"])
        n_samples = math.ceil(n / len(prompts))
        requests = generation_requests(tokenizer, prompts, n_samples, config["seed"])  # prompt-major
        # The first n (prompt, sample) pairs taking every prompt once before any second sample.
        order = sorted(range(len(requests)), key=lambda i: (i % n_samples, i // n_samples))
        requests = [requests[i] for i in order[:n]]
        clock = _Clock(device)
        decode_options = DecodeOptions(batch_size, config["metrics_top_k"], show_progress=False)
        out = generate(model, tokenizer, requests, params, decode_options)
        wall = clock.lap()
        sweep.append(
            {
                "batch_size": batch_size,
                "sequences": n,
                "tokens": int(sum(len(g.token_ids) for g in out)),
                "wall_s": wall,
            }
        )
    result["sweep"] = sweep

    # [6] where a decode step's time goes: the end-to-end requests through generate() with timers
    # wrapped around the loop's parts, and [7] the fp32 compute bound at the same batch.
    if config["breakdown"]:
        requests = generation_requests(tokenizer, ts_prompts, config["ts_samples"], config["seed"])
        breakdown = _Breakdown(model, device)
        with breakdown.installed():
            clock = _Clock(device)
            decode_options = DecodeOptions(config["batch_size"], config["metrics_top_k"], show_progress=False)
            out = generate(model, tokenizer, requests, params, decode_options)
            wall = clock.lap()
        lengths = [(len(g.request.prompt_ids), len(g.token_ids)) for g in out]
        tokens = sum(n for _, n in lengths)
        # a token generated at step i (0-based) attended over prompt + i earlier columns of its own row
        context = sum(p * n + n * (n - 1) / 2 for p, n in lengths) / tokens
        rows = min(config["batch_size"], len(requests))
        layers_gflops, unembed_gflops = _linear_gflops(torch, model, rows, device)
        flops = _flops_per_token(model, context)
        result["breakdown"] = {
            "wall_s": wall,
            "tokens": tokens,
            "sequences": len(out),
            "rows": rows,
            "mean_context": context,
            "seconds": breakdown.seconds,
            "calls": breakdown.calls,
            "layers_gflops": layers_gflops,
            "unembed_gflops": unembed_gflops,
            "flops": flops,
        }
    result["peak_rss_final_mib"] = _peak_rss_mib()
    return result


ROLES = {"seed": role_seed, "tokenscope": role_tokenscope}


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


def resolve_model_dir(args: argparse.Namespace) -> Path:
    """A prepared model folder: --model-dir as given, or --model prepared once into the cache."""
    if args.model_dir:
        return Path(args.model_dir)
    from tokenscope.model.sources import ModelSpec, default_cache_dir, prepare_model

    kind, _, location = args.model.partition(":")
    if kind not in ("embedded", "hub", "path") or not location:
        raise SystemExit(f"--model must be embedded:NAME, hub:ID or path:DIR, got {args.model!r}")
    name = location.rstrip("/").replace("/", "--")
    out_dir = default_cache_dir() / "benchmarks" / name
    if not (out_dir / "manifest.json").exists():
        print(f"# preparing {args.model} into {out_dir} (once)", flush=True)
        prepare_model(ModelSpec(name=name, kind=kind, location=location), out_dir)  # type: ignore[arg-type]
    return out_dir


def run_role(role: str, config: dict[str, Any], verbose: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp:
        config_path, result_path = Path(tmp) / "config.json", Path(tmp) / "result.json"
        config_path.write_text(json.dumps(config))
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--role",
            role,
            "--role-config",
            str(config_path),
            "--role-result",
            str(result_path),
        ]
        proc = subprocess.run(
            command,
            stdout=None if verbose else subprocess.PIPE,
            stderr=None if verbose else subprocess.STDOUT,
            text=True,
        )
        if proc.returncode != 0:
            if proc.stdout:
                sys.stderr.write(proc.stdout)
            raise SystemExit(f"the {role} worker failed (exit status {proc.returncode})")
        return json.loads(result_path.read_text())


def _gpu_name(device) -> str:
    """The GPU's name from nvidia-smi: asking torch would open a CUDA context in this driver process."""
    try:
        names = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=30
        ).stdout.splitlines()
        return names[device.index or 0].strip()
    except (OSError, IndexError, subprocess.SubprocessError):
        return "gpu"


def _load() -> str:
    """The 1, 5 and 15 minute load averages, where the platform has them."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except (AttributeError, OSError):
        return "n/a"


def _mib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f} MiB"


def breakdown_lines(b: dict[str, Any], device: Any) -> list[str]:
    """[6] per decode step ms and share of the loop's wall for each part; [7] the compute bound."""
    sec, calls = b["seconds"], b["calls"]
    get = lambda name: sec.get(name, 0.0)  # noqa: E731
    steps = max(1, calls.get("forward", 0))
    wall = b["wall_s"]

    def part(label: str, seconds: float, note: str = "") -> str:
        return f"[6]   {label}: {1e3 * seconds / steps:.2f} ms/step ({100 * seconds / wall:.1f}%){note}"

    forward, attention, sdpa, mlp, mask = (get(k) for k in ("forward", "attention", "sdpa", "mlp", "mask"))
    step, unembed, sampling, metrics = (get(k) for k in ("step", "unembedding", "sampling", "metrics"))
    finish, prefill, cache_rows = get("finish"), get("prefill"), get("cache_rows")
    loop_rest = wall - forward - step - finish - prefill - cache_rows
    lines = [
        f"[6] decode step breakdown ({b['sequences']} sequences of [2] through generate(), {b['rows']} rows, "
        f"{steps} decode steps, {b['tokens']} tokens, {b['tokens'] / wall:.1f} tok/s with the timers, "
        f"{wall:.2f} s){' (timers synchronise the GPU)' if device.type == 'cuda' else ''}:",
        part("backbone forward of decode steps", forward),
        part("  attention modules (projections, rotary, kernel)", attention),
        part("    of which the SDPA kernel", sdpa),
        part("  MLPs", mlp),
        part("  rest of the backbone (embedding, norms, residuals, masks)", forward - attention - mlp),
        part("    of which mask building", mask),
        part("unembedding (fp32 logits)", unembed),
        part("sampling", sampling),
        part("metrics", metrics),
        part("packing + host transfer (rest of _Decoder.step)", step - unembed - sampling - metrics),
        part("result bookkeeping (_Decoder.finish)", finish),
        part("prefill of prompts (first and joining)", prefill),
        part("KV cache row drops, refills, compaction", cache_rows),
        part("rest of the loop (masks, positions, row state)", loop_rest),
    ]
    f = b["flops"]
    attention_flops = f["attention"]
    seconds_per_token = (f["layers"] + attention_flops) / (b["layers_gflops"] * 1e9) + f["unembedding"] / (
        b["unembed_gflops"] * 1e9
    )
    bound = 1.0 / seconds_per_token
    achieved = b["tokens"] / wall
    forward_only = b["tokens"] / (forward + unembed)
    lines += [
        f"[7] fp32 compute bound at {b['rows']} rows: F.linear {b['layers_gflops']:.1f} GFLOP/s at the layers' "
        f"shapes, {b['unembed_gflops']:.1f} GFLOP/s at the unembedding's; FLOPs per token "
        f"{f['total'] / 1e6:.1f} M = 2 x {f['non_embedding_params'] / 1e6:.1f} M non-embedding params "
        f"+ 2 x hidden x vocab {f['unembedding'] / 1e6:.1f} M + attention over mean context "
        f"{b['mean_context']:.0f} {attention_flops / 1e6:.1f} M",
        f"[7] compute bound {bound:.1f} tok/s; the decode loop reaches {achieved:.1f} tok/s = "
        f"{100 * achieved / bound:.0f}% of it (its forward + unembedding alone: {100 * forward_only / bound:.0f}%)",
    ]
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (~1 min on 2 cores): 2 reference-pipeline prompts, 8x2 tokenscope sequences, "
        "32 new tokens, batch sizes 1,4,16",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"embedded:NAME, hub:ID or path:DIR, prepared once into the tokenscope cache (default {DEFAULT_MODEL})",
    )
    parser.add_argument("--model-dir", help="an already prepared model folder (has manifest.json); overrides --model")
    parser.add_argument("--prompts", default=str(DEFAULT_PROMPTS), help="prompt set JSONL (default math24)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dtype", default="auto", help="auto (fp32 on cpu, bf16 on cuda), float32, bfloat16, float16")
    parser.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default 64 (--quick: 32)")
    parser.add_argument(
        "--seed-prompts",
        type=int,
        default=None,
        help="first N prompts for the reference notebook pipeline, 1 sample each (default 8; --quick: 2)",
    )
    parser.add_argument(
        "--ts-prompts",
        type=int,
        default=None,
        help="first N prompts for tokenscope end to end (default 24; --quick: 8)",
    )
    parser.add_argument("--ts-samples", type=int, default=2, help="samples per prompt for tokenscope end to end")
    parser.add_argument("--batch-size", type=int, default=64, help="tokenscope end-to-end generation batch size")
    parser.add_argument(
        "--batch-sizes",
        default=None,
        help="comma-separated generation batch sizes to sweep (default 1,4,16,64; --quick: 1,4,16)",
    )
    parser.add_argument(
        "--sweep-min-sequences",
        type=int,
        default=None,
        help="each sweep point generates max(batch size, this) sequences (default 4; --quick: 2)",
    )
    parser.add_argument("--score-batch-size", type=int, default=8, help="teacher-forced scoring batch size")
    parser.add_argument("--score-repeats", type=int, default=1, help="timed scoring repeats (best is reported)")
    parser.add_argument("--metrics-top-k", type=int, default=5, help="tokenscope's top-k alternatives per token")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--greedy", action="store_true", help="do_sample=False (both pipelines)")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--top-k", type=int, default=50, help="sampling top-k (0 = off)")
    parser.add_argument("--no-top-k", action="store_true", help="top_k=0: exercise top-p without top-k")
    parser.add_argument(
        "--no-breakdown",
        action="store_true",
        help="skip [6]/[7]: the timed breakdown of a decode step and the fp32 compute bound",
    )
    parser.add_argument("--json", help="also write all figures to this JSON file")
    parser.add_argument("--verbose", action="store_true", help="show the workers' output (warnings, logs)")
    parser.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    parser.add_argument("--role-config", help=argparse.SUPPRESS)
    parser.add_argument("--role-result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    quick = args.quick
    if args.max_new_tokens is None:
        args.max_new_tokens = 32 if quick else 64
    if args.seed_prompts is None:
        args.seed_prompts = 2 if quick else 8
    if args.ts_prompts is None:
        args.ts_prompts = 8 if quick else 24
    if args.batch_sizes is None:
        args.batch_sizes = "1,4,16" if quick else "1,4,16,64"
    if args.sweep_min_sequences is None:
        args.sweep_min_sequences = 2 if quick else 4
    args.batch_sizes = [int(b) for b in str(args.batch_sizes).split(",") if b.strip()]
    if args.no_top_k:
        args.top_k = 0
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.role:
        config = json.loads(Path(args.role_config).read_text())
        Path(args.role_result).write_text(json.dumps(ROLES[args.role](config)))
        return

    import torch

    from tokenscope.inputs.prompts import load_prompt_set
    from tokenscope.model.loading import resolve_device, resolve_dtype

    model_dir = resolve_model_dir(args)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    n_prompts = len(load_prompt_set(args.prompts))
    args.seed_prompts = min(args.seed_prompts, n_prompts)
    args.ts_prompts = min(args.ts_prompts, n_prompts)
    config = {
        "model_dir": str(model_dir),
        "prompts": args.prompts,
        "device": args.device,
        "dtype": args.dtype,
        "threads": args.threads,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
        "do_sample": not args.greedy,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "seed_prompts": args.seed_prompts,
        "ts_prompts": args.ts_prompts,
        "ts_samples": args.ts_samples,
        "batch_size": args.batch_size,
        "batch_sizes": args.batch_sizes,
        "sweep_min_sequences": args.sweep_min_sequences,
        "score_batch_size": args.score_batch_size,
        "score_repeats": args.score_repeats,
        "metrics_top_k": args.metrics_top_k,
        "breakdown": not args.no_breakdown,
    }
    manifest = json.loads((model_dir / "manifest.json").read_text())
    device_name = _gpu_name(device) if device.type == "cuda" else "cpu"
    say = lambda line: print(line, flush=True)  # noqa: E731

    say("== tokenscope pipeline benchmark: reference notebook pipeline vs tokenscope ==")
    say(f"device: {device} ({device_name}), dtype {str(dtype).removeprefix('torch.')}, torch {torch.__version__}")
    say(f"torch threads: {args.threads} (cpu count {os.cpu_count()}, load average {_load()})")
    say(f"model: {manifest.get('model')} ({model_dir})")
    say(f"prompt set: {args.prompts} ({n_prompts} prompts)")
    say(f"max_new_tokens: {args.max_new_tokens}")
    say(
        f"sampling (both pipelines): do_sample={not args.greedy} temperature={args.temperature} "
        f"top_p={args.top_p} top_k={args.top_k}{' (off)' if args.top_k == 0 else ''}"
    )
    say(f"reference notebook pipeline: first {args.seed_prompts} prompts x 1 sample, one at a time")
    say(
        f"tokenscope end to end: first {args.ts_prompts} prompts x {args.ts_samples} samples = "
        f"{args.ts_prompts * args.ts_samples} sequences, batch size {args.batch_size}"
    )
    say("tokens/s = generated (or scored) tokens / wall seconds; model loading is excluded, one warm-up call precedes")

    seed = run_role("seed", config, args.verbose)
    seed_tps = seed["tokens"] / seed["wall_s"]
    say(
        f"[1] reference notebook pipeline end-to-end tokens/s: {seed_tps:.1f} tok/s "
        f"({seed['tokens']} generated tokens = rows of its per-token stats, {args.seed_prompts} sequences, "
        f"mean prompt {seed['mean_prompt_tokens']:.0f} tokens)"
    )
    say(
        f"[1] reference notebook pipeline end-to-end wall: {seed['wall_s']:.2f} s "
        f"(chat template + model.generate {seed['generate_s']:.2f} s, "
        f"second forward + per-token loop {seed['stats_s']:.2f} s)"
    )
    say(f"[1] reference notebook pipeline generate-only tokens/s: {seed['tokens'] / seed['generate_s']:.1f} tok/s")
    say(
        f"[1] reference notebook pipeline peak RSS: {_mib(seed['peak_rss_mib'])} "
        f"(after model load: {_mib(seed['rss_loaded_mib'])})"
    )
    if seed["gpu_peak_mib"] is not None:
        say(f"[1] reference notebook pipeline peak GPU memory allocated: {_mib(seed['gpu_peak_mib'])}")

    ts = run_role("tokenscope", config, args.verbose)
    e2e = ts["e2e"]
    ts_tps = e2e["tokens"] / e2e["wall_s"]
    say(
        f"[2] tokenscope end-to-end tokens/s: {ts_tps:.1f} tok/s "
        f"({e2e['tokens']} generated tokens = rows of the per-token table, {e2e['sequences']} sequences, "
        f"{e2e['finished_by_eos']} ended by eos, mean prompt {e2e['mean_prompt_tokens']:.0f} tokens)"
    )
    say(f"[2] tokenscope end-to-end wall: {e2e['wall_s']:.2f} s (run_generation, batch size {args.batch_size})")
    say(f"[2] tokenscope peak RSS: {_mib(e2e['peak_rss_mib'])} (after model load: {_mib(ts['rss_loaded_mib'])})")
    if e2e["gpu_peak_mib"] is not None:
        say(f"[2] tokenscope peak GPU memory allocated: {_mib(e2e['gpu_peak_mib'])}")

    for point in ts["sweep"]:
        say(
            f"[3] tokenscope generation tokens/s at batch size {point['batch_size']}: "
            f"{point['tokens'] / point['wall_s']:.1f} tok/s "
            f"({point['tokens']} tokens, {point['sequences']} sequences, {point['wall_s']:.2f} s)"
        )

    sc = ts["scoring"]
    score_tps, bare_tps, full_tps = (sc["tokens"] / sc[f"{k}_s"] for k in ("score", "bare", "full"))
    say(
        f"[4] scored sequences: {sc['sequences']} from [2], {sc['tokens']} completion tokens scored "
        f"({sc['context_tokens']} tokens forwarded incl. prompts), batch size {args.score_batch_size}"
    )
    say(f"[4] teacher-forced scoring tokens/s (score_token_sequences): {score_tps:.1f} tok/s ({sc['score_s']:.2f} s)")
    say(f"[4] bare backbone forward tokens/s (same batches, no metrics): {bare_tps:.1f} tok/s ({sc['bare_s']:.2f} s)")
    say(f"[4] full forward with all logits tokens/s (same batches): {full_tps:.1f} tok/s ({sc['full_s']:.2f} s)")
    say(f"[4] scoring / bare forward tokens/s ratio: {score_tps / bare_tps:.2f}")

    if "breakdown" in ts:
        for line in breakdown_lines(ts["breakdown"], device):
            say(line)
    say(f"load average at the end: {_load()} (other processes share these cores: compare figures of one run)")

    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"config": config, "seed": seed, "tokenscope": ts}, indent=2))
    say(f"[5] tokenscope / reference notebook pipeline end-to-end tokens/s ratio: {ts_tps / seed_tps:.2f}")


if __name__ == "__main__":
    main()
