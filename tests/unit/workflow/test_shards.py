"""Generation shards: how a prompt set splits, what reruns a shard, the gather, and that the results
do not depend on the shard size (tokenscope.workflow.shards)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tokenscope.errors import ConfigError, PromptSetError, ResultFileError
from tokenscope.generation.options import GenerationOptions
from tokenscope.inputs.prompts import load_prompt_set
from tokenscope.io import gather_parquet
from tokenscope.scoring.options import ScoringOptions
from tokenscope.workflow.planning import PromptSetFacts
from tokenscope.workflow.shards import (
    MAX_SHARDS,
    SHARD_PATTERN,
    ShardPlan,
    check_shard,
    file_shards,
    plan_shards,
    shard_file,
    split_lines,
)

from helpers.paths import REPO
from helpers.tables import assert_same_rows


def line(prompt_id: str, text: str = "hi") -> bytes:
    return json.dumps({"id": prompt_id, "messages": [{"role": "user", "content": text}]}).encode()


def write_lines(path: Path, ids: list[str], ending: bytes = b"\n") -> Path:
    path.write_bytes(b"".join(line(i) + ending for i in ids))
    return path


def test_contiguous_shards_in_file_order(tmp_path):
    ids = [f"p{i}" for i in range(5)]
    path = write_lines(tmp_path / "s.jsonl", ids)
    shards = file_shards(path, 2)
    assert [(s.name, s.start, s.stop) for s in shards] == [("00000", 0, 2), ("00001", 2, 4), ("00002", 4, 5)]
    assert shards[0].sha256 == hashlib.sha256(line("p0") + b"\n" + line("p1") + b"\n").hexdigest()
    assert [s.name for s in file_shards(path, 5)] == [s.name for s in file_shards(path, 512)] == ["00000"]
    assert [(s.start, s.stop) for s in file_shards(path, 1)] == [(i, i + 1) for i in range(5)]


def test_shards_count_prompts_as_load_prompt_set_does(tmp_path):
    """Blank lines, CRLF and CR endings and a byte-order mark: prompt i is the same for both."""
    path = tmp_path / "s.jsonl"
    path.write_bytes(
        b"\xef\xbb\xbf" + line("a") + b"\r\n\r\n  \n" + line("b") + b"\r" + line("c") + b"\n\t\n" + line("d") + b"\n"
    )
    prompts = load_prompt_set(path)
    shards = file_shards(path, 3)
    assert [[p.id for p in prompts[s.start : s.stop]] for s in shards] == [["a", "b", "c"], ["d"]]
    # Line endings do not change a shard's digest: it hashes the lines, each ended by \n.
    same = write_lines(tmp_path / "lf.jsonl", ["a", "b", "c", "d"])
    assert [s.sha256 for s in file_shards(same, 3)] == [s.sha256 for s in shards]


def test_appending_prompts_changes_only_the_last_shard(tmp_path):
    path = write_lines(tmp_path / "s.jsonl", [f"p{i}" for i in range(5)])
    before = file_shards(path, 2)
    write_lines(path, [f"p{i}" for i in range(8)])
    after = file_shards(path, 2)
    assert after[:2] == before[:2]  # full shards: same range, same digest, so same params
    assert (after[2].start, after[2].stop) == (4, 6) and after[2].sha256 != before[2].sha256
    assert [(s.name, s.start, s.stop) for s in after[3:]] == [("00003", 6, 8)]


def test_editing_a_prompt_changes_only_its_shard(tmp_path):
    path = write_lines(tmp_path / "s.jsonl", [f"p{i}" for i in range(5)])
    before = file_shards(path, 2)
    lines = path.read_bytes().splitlines()
    lines[3] = line("p3", "edited")
    path.write_bytes(b"\n".join(lines) + b"\n")
    after = file_shards(path, 2)
    assert [a == b for a, b in zip(after, before, strict=True)] == [True, False, True]


def test_shard_names_do_not_depend_on_prompt_ids(tmp_path):
    """Ids that look like shard names are prompts like any other: a shard is named by its index."""
    ids = ["00001", "shard-00000", "00000", "99999"]
    shards = file_shards(write_lines(tmp_path / "s.jsonl", ids), 1)
    assert [s.name for s in shards] == ["00000", "00001", "00002", "00003"]
    assert shard_file("set", "model", "00001", "tokens") == "results/shards/set/model/00001/tokens.parquet"


def test_shard_pattern_matches_shard_names_only():
    import re

    assert re.fullmatch(SHARD_PATTERN, "00000") and re.fullmatch(SHARD_PATTERN, "99999")
    assert not any(re.fullmatch(SHARD_PATTERN, name) for name in ("0000", "000000", "shard-00000", "0000a"))


def test_more_shards_than_names_is_one_line_naming_the_key(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"".join(line(str(i)) + b"\n" for i in range(MAX_SHARDS + 1)))
    with pytest.raises(ConfigError) as caught:
        file_shards(path, 1, "big")
    message = str(caught.value)
    assert message.startswith("generation.shard_size: 1 splits the 100001 prompts of prompt set 'big'")
    assert "\n" not in message and "raise generation.shard_size" in message
    assert len(file_shards(path, 2)) == 50_001


def test_split_lines_refuses_a_size_below_one():
    with pytest.raises(ValueError):
        split_lines([b"x"], 0)


def test_plan_reads_a_file_once_for_the_sets_that_share_it(tmp_path, monkeypatch):
    path = str(write_lines(tmp_path / "s.jsonl", ["a", "b", "c"]))
    other = str(write_lines(tmp_path / "o.jsonl", ["x"]))
    facts = {
        "plain": PromptSetFacts(path),
        "filler": PromptSetFacts(path, {"text": " ...", "count": 2}),
        "other": PromptSetFacts(other),
    }
    read: list[str] = []
    import tokenscope.workflow.shards as shards_module

    original = shards_module.prompt_lines
    monkeypatch.setattr(shards_module, "prompt_lines", lambda p: read.append(str(p)) or original(p))
    plan = plan_shards(facts, {"shard_size": 2, "batch_size": 4})
    assert sorted(read) == sorted([path, other])
    assert plan.shards["plain"] == plan.shards["filler"] and len(plan.shards["other"]) == 1
    assert plan.files("filler", "m", "tokens") == [
        "results/shards/filler/m/00000/tokens.parquet",
        "results/shards/filler/m/00001/tokens.parquet",
    ]
    assert plan.shard("plain", "00001").params() == {
        "start": 2,
        "stop": 3,
        "sha256": hashlib.sha256(line("c") + b"\n").hexdigest(),
    }
    with pytest.raises(ConfigError) as caught:
        plan.shard("plain", "00002")
    message = str(caught.value)
    assert message == f"prompt set 'plain' ({path}) has shards 00000 to 00001, not 00002 (generation.shard_size: 2)"


def test_generation_params_leave_out_what_cannot_change_results():
    generation = {
        "prompt_sets": ["a"],
        "n_samples": 2,
        "seed": 3,
        "batch_size": 16,
        "shard_size": 512,
        "truncate_to_context": False,
        "sampling": {"temperature": 0.7},
    }
    params = GenerationOptions.job_params({"generation": generation})
    assert params == {
        "n_samples": 2,
        "seed": 3,
        "truncate_to_context": False,
        "sampling": {"temperature": 0.7},
    }
    # in the config's key order: the text Snakemake compares is the one planned before these options
    assert list(params) == ["n_samples", "seed", "truncate_to_context", "sampling"]
    later = {**generation, "seed": 4, "batch_size": 64}
    assert GenerationOptions.of_job(params, {"generation": later}) == GenerationOptions(
        n_samples=2, seed=3, sampling={"temperature": 0.7}, batch_size=64
    )


def test_check_shard_refuses_prompts_changed_after_planning(tmp_path):
    path = write_lines(tmp_path / "s.jsonl", ["a", "b", "c"])
    shard = ShardPlan({"s": str(path)}, 2).shard("s", "00000").params()
    check_shard(path, shard)
    write_lines(path, ["a", "B", "c"])
    with pytest.raises(PromptSetError, match=r"s\.jsonl: prompts 1 to 2 changed after the workflow was planned"):
        check_shard(path, shard)
    write_lines(path, ["a"])  # the shard's prompts are gone
    with pytest.raises(PromptSetError):
        check_shard(path, shard)


def test_planning_shards_never_imports_pyarrow_or_torch():
    code = (
        "import sys, tokenscope.workflow.shards; "
        "print(sorted(m for m in ('torch', 'pyarrow', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


# The gather

SCHEMA = pa.schema(
    [("prompt_id", pa.string()), ("step", pa.int32()), ("topk", pa.list_(pa.float32()))],
    metadata={"tokenscope_schema": "2", "tokenscope_table": "tokens"},
)


def shard_table(first: int, rows: int) -> pa.Table:
    ids = [f"p{(first + i) // 3}" for i in range(rows)]
    return pa.table(
        {"prompt_id": ids, "step": [(first + i) % 3 for i in range(rows)], "topk": [[0.5, i / 7] for i in range(rows)]},
        schema=SCHEMA,
    )


def test_gather_streams_shards_into_one_file_in_order(tmp_path):
    sizes = [7, 0, 12, 5]
    tables, files, first = [], [], 0
    for i, rows in enumerate(sizes):
        table = shard_table(first, rows)
        first += rows
        files.append(tmp_path / f"{i:05d}.parquet")
        pq.write_table(table, files[-1], compression="zstd")
        tables.append(table)
    out = tmp_path / "out" / "gathered.parquet"
    assert gather_parquet(files, out, batch_rows=4) == sum(sizes)
    gathered = pq.read_table(out)
    assert gathered.equals(pa.concat_tables(tables))
    assert gathered.schema.metadata == SCHEMA.metadata
    # Batches of at most 4 rows, each its own row group: memory held one batch at a time.
    row_groups = pq.ParquetFile(out).metadata
    assert max(row_groups.row_group(i).num_rows for i in range(row_groups.num_row_groups)) == 4
    assert [p.name for p in out.parent.iterdir()] == ["gathered.parquet"]


def test_gather_refuses_a_shard_of_another_schema(tmp_path):
    good, other = tmp_path / "00000.parquet", tmp_path / "00001.parquet"
    pq.write_table(shard_table(0, 3), good)
    pq.write_table(shard_table(3, 3).replace_schema_metadata({"tokenscope_schema": "1"}), other)
    out = tmp_path / "out.parquet"
    with pytest.raises(ResultFileError) as caught:
        gather_parquet([good, other], out)
    message = str(caught.value)
    assert message.startswith(f"{other}: schema differs from {good}'s") and "\n" not in message
    assert not out.exists() and list(tmp_path.glob(".out.parquet*")) == []
    with pytest.raises(ValueError, match="no shard files"):
        gather_parquet([], out)


# Results do not depend on the shard size


def test_shards_give_the_unsharded_results(tiny_loaded, tmp_path):
    """Generate 5 prompts x 2 samples at once and as shards of 2 prompts, gathered: the same tables.

    Each sequence's seed derives from (seed, prompt id, sample) only, so sampling is the same
    whichever shard (and batch) a prompt is in. Ids, tokens, texts and token strings are compared
    exactly; float columns within 1e-5 (relative and absolute): a sequence decoded beside other rows
    gets float32 logits that differ in the last bits (helpers/tables.py).
    """
    from tokenscope.generation.run import write_generation

    from helpers.prompts import make_prompts

    model, tokenizer = tiny_loaded("llama")
    prompts = make_prompts(5)
    sampling = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 0.95, "max_new_tokens": 12}
    options = dict(
        model_name="m",
        prompt_set="s",
        options=GenerationOptions(n_samples=2, seed=7, sampling=sampling, batch_size=3),
        scoring=ScoringOptions(n_alternatives=3),
        show_progress=False,
    )

    def run(shard_size: int) -> dict[str, pa.Table]:
        folder = tmp_path / str(shard_size)
        files: dict[str, list[Path]] = {"generations": [], "tokens": []}
        for index, start in enumerate(range(0, len(prompts), shard_size)):
            paths = {table: folder / f"{index:05d}" / f"{table}.parquet" for table in files}
            write_generation(
                model,
                tokenizer,
                prompts[start : start + shard_size],
                generations_path=paths["generations"],
                tokens_path=paths["tokens"],
                **options,
            )
            for table in files:
                files[table].append(paths[table])
        gathered = {}
        for table, shards in files.items():
            gather_parquet(shards, folder / f"{table}.parquet")
            gathered[table] = pq.read_table(folder / f"{table}.parquet")
        return gathered

    whole, sharded = run(len(prompts)), run(2)
    for table in ("generations", "tokens"):
        assert_same_rows(sharded[table], whole[table])
    assert whole["generations"].num_rows == 10 and whole["tokens"].num_rows > 10


def test_table_comparison_allows_only_near_ties_to_reorder():
    """helpers/tables.py, which the shard-size tests compare with: alternatives whose probabilities
    tie within the tolerance may swap, others may not; ranks may differ by one in few rows."""

    def tokens(ids, probs, rank):
        return pa.table(
            {
                "prompt_id": ["p"] * len(ids),
                "sample": pa.array([0] * len(ids), pa.int32()),
                "step": pa.array(range(len(ids)), pa.int32()),
                "rank": pa.array(rank, pa.int32()),
                "topk_ids": pa.array(ids, pa.list_(pa.int32())),
                "topk_probs": pa.array(probs, pa.list_(pa.float32())),
            }
        )

    probs = [[0.5, 0.2, 0.2, 0.1]] * 3
    reference = tokens([[1, 2, 3, 4]] * 3, probs, [1, 2, 3])
    assert_same_rows(tokens([[1, 3, 2, 4], [1, 2, 3, 9], [1, 2, 3, 4]], probs, [1, 2, 3]), reference)
    with pytest.raises(AssertionError):  # 0.5 and 0.2 are no tie
        assert_same_rows(tokens([[2, 1, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]], probs, [1, 2, 3]), reference)
    with pytest.raises(AssertionError):  # one rank in three is more than ties explain
        assert_same_rows(tokens([[1, 2, 3, 4]] * 3, probs, [1, 3, 3]), reference)
