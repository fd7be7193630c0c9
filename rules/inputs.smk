# Input and params functions of the rules: each takes the job's wildcards and asks the plan
# (rules/common.smk). Also the report entries that several outputs of one rule share.
from tokenscope.workflow.planning import generations_file, manifest_file


def get_model_files(wildcards):
    """What a model's preparation reads: its checkpoint files, or the finetune's output folder."""
    return plan.model_files[wildcards.model]


def get_model_source(wildcards):
    """The model's config entry (a finetuned checkpoint's is the folder the finetune writes)."""
    return plan.model_entries[wildcards.model]


def get_manifest(wildcards):
    return manifest_file(wildcards.model)


def get_group_manifests(wildcards):
    return plan.group_manifests(wildcards.group)


def get_group_models(wildcards):
    return plan.groups[wildcards.group]


def get_prompt_file(wildcards):
    return plan.prompt_file(wildcards.prompt_set)


def get_prompt_insertion(wildcards):
    return plan.prompt_insertion(wildcards.prompt_set)


def get_group_token_files(wildcards):
    """The group's models on the view's tokens (their own generations or the references)."""
    return plan.group_token_files(wildcards.prompt_set, wildcards.group, wildcards.view)


def get_pair_tokens(wildcards):
    """What a pair scores: the prompt set's reference answers or a model's generations."""
    if wildcards.source == "reference":
        return plan.prompt_file(wildcards.prompt_set)
    return generations_file(wildcards.prompt_set, wildcards.source)


def get_pair_score_span(wildcards):
    """scoring.score_span for a pair on the reference answers; None on generated tokens."""
    return plan.pair_score_span(wildcards.source)


def get_compare_own_tokens(wildcards):
    return plan.compare_own_token_files(wildcards.prompt_set, wildcards.group)


def get_compare_pairs(wildcards):
    return plan.compare_base_pairs(wildcards.prompt_set, wildcards.group)


def get_marker_attention_tables(wildcards):
    return plan.marker_attention_tables(wildcards.prompt_set, wildcards.group)


def get_attention_positions_without(wildcards):
    """The same measurement on the prompt set the filler set derives from."""
    source = plan.source_prompt_set(wildcards.prompt_set)
    return paths.INTERNALS.format(
        prompt_set=source, model=wildcards.model, table="attention_positions"
    )


def get_scoring_pairs(wildcards):
    """Pair tables that scored the same tokens, for the token view's KL colouring."""
    return plan.scoring_pairs(wildcards.prompt_set, wildcards.model, wildcards.source)


def get_token_view_generations(wildcards):
    """The generations behind a model's own tokens (none for reference answers)."""
    if wildcards.source == "reference":
        return []
    return generations_file(wildcards.prompt_set, wildcards.source)


def get_side_by_side_generations(wildcards):
    """A's and B's generations beside a side-by-side page's shared text (none where the set is not generated)."""
    return plan.side_by_side_generations(
        wildcards.prompt_set, wildcards.model_a, wildcards.model_b
    )


def analysis_table(name, table):
    """A table of rule analyze_tokens, registered in the report under "Token analysis"."""
    return report(
        fill(paths.ANALYSIS, file=f"{name}.csv"),
        caption="../report/token_analysis.rst",
        category="Token analysis",
        subcategory="{prompt_set}",
        labels={"model": "{model}", "tokens": "{source}", "table": table},
    )


def get_shard(wildcards):
    """A generation shard's prompt range and the sha256 of its prompt lines (its params)."""
    return shards.shard(wildcards.prompt_set, wildcards.shard).params()


def get_generation_shards(wildcards):
    """The generations tables of every shard of (prompt_set, model), in shard order."""
    return shards.files(wildcards.prompt_set, wildcards.model, "generations")


def get_token_shards(wildcards):
    """The per-token tables of every shard of (prompt_set, model), in shard order."""
    return shards.files(wildcards.prompt_set, wildcards.model, "tokens")


def get_reference_shards(wildcards):
    """The teacher-forced tables of every shard of (prompt_set, model), in shard order."""
    return shards.files(wildcards.prompt_set, wildcards.model, "reference")


def get_answer_params(wildcards):
    """What grading a prompt set's generations depends on: its extraction pattern (answers.patterns)
    and, where it has answers, their digest and answers.tolerance."""
    return plan.answer_params(wildcards.prompt_set)


def get_outcome_tokens(wildcards):
    """Each model of the group on its own generations (per-token tables)."""
    return plan.outcome_token_files(wildcards.prompt_set, wildcards.group)


def get_outcome_generations(wildcards):
    """The group's generations tables, graded (column `correct`)."""
    return plan.outcome_generation_files(wildcards.prompt_set, wildcards.group)


def get_outcome_settings(wildcards):
    """What changes the tables: pass@k's k values, the high-entropy quantile, the bootstrap."""
    return plan.outcome_settings()


def outcome_figure(name, caption):
    """A figure of rule plot_outcomes, registered in the report under "Outcomes"."""
    return report(
        fill(paths.OUTCOME_FIGURE, figure=name, suffix="png"),
        caption=f"../report/{caption}",
        category="Outcomes",
        subcategory="{prompt_set}",
        labels={"group": "{group}", "figure": name},
    )
