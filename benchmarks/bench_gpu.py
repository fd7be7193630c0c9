#!/usr/bin/env python
"""Generation speed and peak GPU memory on random-weight Qwen2.5-1.5B and Qwen2.5-7B models.

For each model, number of new tokens and batch size, one line per engine:

  seed        the reference notebook pipeline (benchmarks/bench_pipeline.py: model.generate one
              prompt at a time, a second forward pass, a Python loop over positions); it runs one
              prompt at a time whatever the batch, so it is timed on --seed-prompts prompts
  hf          transformers' model.generate(output_logits=True, return_dict_in_generate=True) on the
              whole batch at once, plus entropy and logprob of the chosen tokens from the returned
              logits (what a user of generate computes next); skipped with the memory it would need
              where the returned logits (batch x new tokens x vocabulary, fp32) cannot fit
  tokenscope  tokenscope.generation.decode.generate on the whole batch (it scores its own tokens)

printing generated tokens/s and the peak GPU memory (torch.cuda.max_memory_allocated) of each run,
as it goes, and a last line per model and length with the ratios at each batch. The models are
built from their configs (inline below, as published on the Hugging Face hub: no download) with
random weights in bf16, and the final norm scaled so that logits have a standard deviation of 4
(a random model's near-uniform distribution is unlike a trained model's). Random models never
reliably emit an end token, so every engine generates the full length (no end tokens). Sampling:
temperature 0.7, top-p 0.9, top-k 50. Prompts: distinct chat prompts of about 60 tokens.

    python benchmarks/bench_gpu.py --smoke          # tiny config on the CPU, under a minute
    python benchmarks/bench_gpu.py --models 1.5b --new-tokens 1024 --batches 1,16,64,256
    python benchmarks/bench_gpu.py --models 7b --new-tokens 1024 --batches 16,256 --engines hf,tokenscope

One command should stay within about 10 minutes: --budget-s (default 540) skips the runs that
would start after it, and the lines printed so far are the results. On an H200, Qwen2.5-7B at
4,096 new tokens takes minutes per engine and batch: select what to run with --models,
--new-tokens, --batches and --engines.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

# Qwen2.5 configs (config.json of Qwen/Qwen2.5-1.5B-Instruct and Qwen/Qwen2.5-7B-Instruct).
CONFIGS: dict[str, dict[str, Any]] = {
    "1.5b": dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        vocab_size=151936,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        use_sliding_window=False,
        sliding_window=32768,
        max_window_layers=21,
        hidden_act="silu",
    ),
    "7b": dict(
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        vocab_size=152064,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        use_sliding_window=False,
        sliding_window=131072,
        max_window_layers=28,
        hidden_act="silu",
    ),
    # --smoke: a tiny model with the same architecture, on the CPU.
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=2048,
        max_position_embeddings=4096,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        hidden_act="silu",
    ),
}
SAMPLING = {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "top_k": 50}
LOGIT_STD = 4.0
ENGINES = ("seed", "hf", "tokenscope")
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
QUESTION = (
    "A train leaves the station at 9:40 and travels 180 km at 72 km/h, then 95 km at 38 km/h. "
    "At what time does it arrive? Think step by step and put the final answer in \\boxed{}."
)


def build_tokenizer():
    """A byte-level BPE tokenizer with ChatML, trained in milliseconds on the question (no download).
    Its few hundred ids are the prompts' tokens; the model's vocabulary is the config's."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    corpus = [QUESTION, "Problem 0123456789: Think step by step."] * 20
    bpe.train_from_iterator(
        corpus, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    tokenizer.chat_template = CHATML
    return tokenizer


def build_model(name: str, device: Any, dtype: Any):
    """A random-weight Qwen2 model of config `name` on `device`, loaded as tokenscope loads models
    (its attention implementation: LoadOptions' default), logits with std LOGIT_STD."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from tokenscope.model.loading import LoadOptions

    config = Qwen2Config(**CONFIGS[name], pad_token_id=0, bos_token_id=None, eos_token_id=None)
    torch.manual_seed(0)
    kwargs = {"dtype": dtype}
    if LoadOptions().attn_implementation:
        kwargs["attn_implementation"] = LoadOptions().attn_implementation
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, **kwargs)
    model.eval()
    with torch.no_grad():
        std = model.get_output_embeddings().weight.float().std().item()
        model.model.norm.weight.fill_(LOGIT_STD / (std * math.sqrt(config.hidden_size)))
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def chat_prompts(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"Problem {i:04d}: {QUESTION}"}] for i in range(n)]


@dataclass
class Run:
    tokens: int
    seconds: float
    peak_mib: float | None

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measured(device: Any, work) -> Run:
    """Time `work()` (which returns its number of generated tokens) with the GPU's peak memory."""
    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start = time.perf_counter()
    tokens = work()
    sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return Run(tokens, seconds, peak)


def run_seed(model, tokenizer, device, batch: int, new_tokens: int, prompts: int) -> Run:
    from bench_pipeline import seed_process_prompt

    def work() -> int:
        frames = [
            seed_process_prompt(model, tokenizer, messages, device, new_tokens, SAMPLING)
            for messages in chat_prompts(prompts)
        ]
        return sum(len(frame) for frame in frames)

    return measured(device, work)


def hf_logits_bytes(batch: int, new_tokens: int, vocab: int) -> int:
    return batch * new_tokens * vocab * 4


def run_hf(model, tokenizer, device, batch: int, new_tokens: int) -> Run:
    import torch

    texts = [tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in chat_prompts(batch)]
    tokenizer.padding_side = "left"
    inputs = tokenizer(texts, return_tensors="pt", padding=True).to(device)

    def work() -> int:
        with torch.no_grad():
            out = model.generate(
                **inputs,
                max_new_tokens=new_tokens,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=0,
                **SAMPLING,
            )
            chosen = out.sequences[:, inputs["input_ids"].shape[1] :]
            entropy, logprob = [], []
            for step, logits in enumerate(out.logits):  # [batch, vocab] per step
                logp = torch.log_softmax(logits.float(), dim=-1)
                entropy.append(-(logp.exp() * logp).sum(-1))
                logprob.append(logp.gather(1, chosen[:, step : step + 1]).squeeze(1))
            torch.stack(entropy).cpu(), torch.stack(logprob).cpu()
        return int(chosen.numel())

    return measured(device, work)


def run_tokenscope(model, tokenizer, device, batch: int, new_tokens: int) -> Run:
    from tokenscope.generation.decode import DecodeOptions, GenerationRequest, generate
    from tokenscope.generation.sampling import SamplingParams

    requests = [
        GenerationRequest(
            prompt_id=f"p{i}",
            sample=0,
            seed=i,
            prompt_ids=tuple(
                tokenizer(tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True))["input_ids"]
            ),
        )
        for i, m in enumerate(chat_prompts(batch))
    ]
    params = SamplingParams(max_new_tokens=new_tokens, **SAMPLING)

    def work() -> int:
        generations = generate(
            model, tokenizer, requests, params, DecodeOptions(batch_size=batch, eos_ids=(), show_progress=False)
        )
        return sum(len(g.token_ids) for g in generations)

    return measured(device, work)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny config on the CPU, batches 1,4, 16 and 32 tokens")
    parser.add_argument("--models", default="1.5b,7b", help="comma-separated: 1.5b, 7b (tiny: --smoke's)")
    parser.add_argument("--new-tokens", default="1024,4096", help="comma-separated new-token counts")
    parser.add_argument("--batches", default="1,16,64,256", help="comma-separated batch sizes")
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated: {', '.join(ENGINES)}")
    parser.add_argument("--seed-prompts", type=int, default=1, help="prompts the seed pipeline is timed on")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--budget-s", type=float, default=540, help="start no run after this many seconds")
    args = parser.parse_args(argv)
    if args.smoke:
        args.models, args.new_tokens, args.batches, args.device = "tiny", "16,32", "1,4", "cpu"
    return args


def main(argv: list[str] | None = None) -> None:
    import torch
    import transformers

    args = parse_args(argv)
    begin = time.perf_counter()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu: CUDA is not available (use --smoke for the CPU check)")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {name}, torch {torch.__version__}, transformers {transformers.__version__}, {dtype}", flush=True)
    engines = [e for e in args.engines.split(",") if e]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        raise SystemExit(f"bench_gpu: unknown engine(s) {sorted(unknown)}; known: {', '.join(ENGINES)}")
    tokenizer = build_tokenizer()
    ratios: list[str] = []
    for model_name in args.models.split(","):
        model = build_model(model_name, device, dtype)
        params = sum(p.numel() for p in model.parameters())
        print(f"model qwen2.5-{model_name} (random weights): {params / 1e9:.2f} B parameters", flush=True)
        # Warm-up of each engine: kernels, allocator, the fp32 unembedding copy.
        for engine in engines:
            if engine == "seed":
                run_seed(model, tokenizer, device, 1, 4, 1)
            elif engine == "hf":
                run_hf(model, tokenizer, device, 2, 4)
            else:
                run_tokenscope(model, tokenizer, device, 2, 4)
        for new_tokens in (int(n) for n in args.new_tokens.split(",")):
            rates: dict[tuple[str, int], float] = {}
            for batch in (int(b) for b in args.batches.split(",")):
                for engine in engines:
                    label = f"qwen2.5-{model_name} new={new_tokens} batch={batch:<3} {engine:<10}"
                    if time.perf_counter() - begin > args.budget_s:
                        print(f"{label} not run: past --budget-s {args.budget_s:.0f}", flush=True)
                        continue
                    if engine == "seed" and (batch, new_tokens) != (
                        min(int(b) for b in args.batches.split(",")),
                        new_tokens,
                    ):
                        continue  # one prompt at a time: the same figure at every batch size
                    if engine == "hf" and device.type == "cuda":
                        need = hf_logits_bytes(batch, new_tokens, model.config.vocab_size)
                        free, _ = torch.cuda.mem_get_info(device)
                        if need > 0.8 * free:
                            print(f"{label} skipped: its returned logits need {need / 2**30:,.0f} GiB, "
                                  f"{free / 2**30:,.0f} GiB free", flush=True)  # fmt: skip
                            continue
                    try:
                        if engine == "seed":
                            run = run_seed(model, tokenizer, device, batch, new_tokens, args.seed_prompts)
                        elif engine == "hf":
                            run = run_hf(model, tokenizer, device, batch, new_tokens)
                        else:
                            run = run_tokenscope(model, tokenizer, device, batch, new_tokens)
                    except torch.cuda.OutOfMemoryError:
                        gc.collect()
                        torch.cuda.empty_cache()
                        print(f"{label} out of GPU memory", flush=True)
                        continue
                    rates[(engine, batch)] = run.rate
                    peak = f"peak GPU {run.peak_mib:,.0f} MiB" if run.peak_mib is not None else "peak GPU n/a (CPU)"
                    counts = f"({run.tokens:,} tokens, {run.seconds:,.2f} s)"
                    print(f"{label} {run.rate:10,.1f} tokens/s  {peak}  {counts}", flush=True)
            seed = next((rate for (engine, _), rate in rates.items() if engine == "seed"), None)
            parts = []
            for batch in (int(b) for b in args.batches.split(",")):
                ours, theirs = rates.get(("tokenscope", batch)), rates.get(("hf", batch))
                text = f"batch {batch}:"
                if ours and seed:
                    text += f" tokenscope/seed {ours / seed:.1f}x"
                if ours and theirs:
                    text += f" tokenscope/hf {ours / theirs:.2f}x"
                parts.append(text)
            ratios.append(f"qwen2.5-{model_name} new={new_tokens}: " + "; ".join(parts))
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for line in ratios:
        print(line, flush=True)


if __name__ == "__main__":
    main()
