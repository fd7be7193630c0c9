"""Where the workflow writes its results: every output path template, named once.

The rules (rules/*.smk) use these templates as their `output:` and `input:` patterns, Snakemake
wildcards and all; the planner (tokenscope.workflow.planning, .shards) formats the same templates
into the files `rule all` and the input functions ask for, so a target always names a file some
rule writes. A template whose wildcards a rule fixes (a table name, a figure's suffix) is filled
in part with `fill`, the other wildcards left for Snakemake. Plain strings only: Snakemake imports
this module when it parses the workflow.
"""

from __future__ import annotations

# A prepared model: safetensors, tokenizer and manifest.json in one folder (rule prepare_model).
MANIFEST = "results/models/{model}/manifest.json"
# A finetune's checkpoint series (rule finetune); each checkpoint a folder in it, read as a model.
FINETUNE = "results/finetune/{model}"
FINETUNE_CHECKPOINT = "results/finetune/{model}/{checkpoint}"
# The tokenizer check of a group's models (rule check_tokenizers).
TOKENIZERS = "results/comparison/{group}/tokenizers.json"

# Generation and teacher forcing, one shard of a prompt set at a time (tokenscope.workflow.shards):
# a shard's `generations`, `tokens` or `reference` table.
SHARD_TABLE = "results/shards/{prompt_set}/{model}/{shard}/{table}.parquet"
# A model's generations of a prompt set, graded (rule gather_generation).
GENERATIONS = "results/generations/{prompt_set}/{model}.parquet"
# A model's per-token table of a prompt set, on the tokens of `source`: its own generations
# (source = the model) or the reference answers (source = reference).
TOKENS = "results/tokens/{prompt_set}/{model}/{source}.parquet"

# Token analyses: a model's tables (rule analyze_tokens; file: name and suffix), a group's
# statistics side by side (rule summarize_group) and figures per view (generated, reference).
ANALYSIS = "results/analysis/{prompt_set}/{model}/{source}/{file}"
SUMMARY = "results/summary/{prompt_set}/{group}/{view}/{file}"
ENTROPY_HIST = "results/figures/{prompt_set}/{group}/{view}/entropy_hist_all.{suffix}"
PROMPT_FIGURES = "results/figures/{prompt_set}/{group}/{view}/per_prompt"

# Checkpoint comparison: pair tables (rule cross_score), a group's tables and trend figure.
PAIR = "results/pairs/{prompt_set}/{model_a}/{model_b}/{source}.parquet"
COMPARISON_TABLES = "results/comparison/{prompt_set}/{group}/tables"
TRENDS = "results/comparison/{prompt_set}/{group}/trends.{suffix}"

# Model internals: a model's tables (marker_attention, attention_positions, convergence,
# logit_lens), a group's marker-attention figure, a model's figure folders per analysis
# (attention_positions, depth).
INTERNALS = "results/internals/{prompt_set}/{model}/{table}.parquet"
MARKER_ATTENTION_FIGURE = "results/figures/internals/{prompt_set}/{group}/marker_attention.{suffix}"
INTERNALS_FIGURES = "results/figures/internals/{prompt_set}/{model}/{analysis}"

# Outcomes of a group's generations: tables, the graded generations and figures (rules
# outcome_stats, plot_outcomes).
OUTCOME_TABLES = "results/outcomes/{prompt_set}/{group}/tables"
OUTCOME_GENERATIONS = "results/outcomes/{prompt_set}/{group}/generations.parquet"
OUTCOME_FIGURE = "results/outcomes/{prompt_set}/{group}/{figure}.{suffix}"

# Pages of the report: a folder of pages and its index page beside it.
TOKEN_VIEW = "results/token_view/{prompt_set}/{model}/{source}"
TOKEN_VIEW_INDEX = TOKEN_VIEW + ".html"
SIDE_BY_SIDE = "results/side_by_side/{prompt_set}/{model_a}/{model_b}/{source}"
SIDE_BY_SIDE_INDEX = SIDE_BY_SIDE + ".html"

# The record of the run: config files, models and their manifest hashes, package versions.
RUN_RECORD = "results/run/record.json"


class _KeepWildcards(dict[str, str]):
    """Format values that leave a field not given as the wildcard it was."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(template: str, **values: str) -> str:
    """`template` with the named wildcards filled in and the others left as wildcards, e.g.
    fill(TOKENS, source="reference") == "results/tokens/{prompt_set}/{model}/reference.parquet"."""
    return template.format_map(_KeepWildcards(values))


# A model's tokens: its own generations (rule gather_tokens), the reference answers (gather_reference).
OWN_TOKENS = fill(TOKENS, source="{model}")
REFERENCE_TOKENS = fill(TOKENS, source="reference")
