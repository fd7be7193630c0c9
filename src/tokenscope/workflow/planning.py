"""DAG-time planning: the models, groups, prompt sets, pair tables and targets a config asks for.

rules/common.smk builds one Plan from the validated config when Snakemake parses the workflow;
`rule all` and the rules' input functions read it. Everything is plain data of the config dict
plus a few facts of the prompt set files (which file, which insertion, whether it has reference
answers), so it is unit-tested without Snakemake. Nothing here imports torch, transformers or
pandas: parsing the workflow (dry runs, --lint, a cluster's login node) stays fast and needs no
GPU stack. A name the config uses but does not define is a ConfigError of one line naming the
config key. Every file it names is a template of tokenscope.workflow.paths, the rules' own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from tokenscope.errors import ConfigError
from tokenscope.finetune.config import FinetuneConfig, checkpoint_name
from tokenscope.inputs.prompts import has_references, load_prompt_set, resolve_prompt_sets
from tokenscope.model.sources import ModelSpec, model_input_files
from tokenscope.outcomes.answers import answer_params, answers_sha256, check_answers_config
from tokenscope.outcomes.options import pass_at_k_values
from tokenscope.scoring.catalogue import check_config_metrics
from tokenscope.scoring.options import normalize_scoring_config
from tokenscope.workflow import paths
from tokenscope.workflow.devices import gpu_count

# A model, group or prompt set name: one path segment (the schema checks config names with it).
NAME_PATTERN = "[A-Za-z0-9][A-Za-z0-9_.-]*"
VIEWS = ("generated", "reference")
# The figures of rule plot_outcomes, per prompt set and group.
OUTCOME_FIGURES = ("outcomes", "auroc", "entropy_fit")


def require_known(key: str, names: Iterable[str], known: Iterable[str], kind: str) -> None:
    """Stop with one line naming the config key if it lists a name that is not defined."""
    known = set(known)
    for name in names:
        if name not in known:
            raise ConfigError(f"{key}: unknown {kind} {name!r}; {kind}s: {sorted(known)}")


def finetune_checkpoints(config: Mapping[str, Any]) -> dict[str, str]:
    """Checkpoint model name -> the model it is finetuned from (empty without a finetune section)."""
    finetune = config.get("finetune")
    if not finetune:
        return {}
    base = finetune["base"]
    if base not in config["models"]:
        raise ConfigError(f"finetune.base: unknown model {base!r}; models: {sorted(config['models'])}")
    n_checkpoints = finetune.get("n_checkpoints", FinetuneConfig.n_checkpoints)
    checkpoints = {}
    for k in range(1, n_checkpoints + 1):
        name = checkpoint_name(k, n_checkpoints)
        if name in config["models"]:
            raise ConfigError(f"models.{name}: this name is taken by the finetune's checkpoint {k}")
        checkpoints[name] = base
    return checkpoints


def finetune_folder(base: str) -> str:
    """Output of rule finetune: the folder of the checkpoint series of `base`."""
    return paths.FINETUNE.format(model=base)


def model_entries(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The config's models, in order, then the finetune's checkpoints (local folders it writes)."""
    entries = {name: dict(entry) for name, entry in config["models"].items()}
    for name, base in finetune_checkpoints(config).items():
        entries[name] = {"path": paths.FINETUNE_CHECKPOINT.format(model=base, checkpoint=name)}
    return entries


def model_files(config: Mapping[str, Any]) -> dict[str, list[str]]:
    """Model name -> inputs of its preparation; raises ModelError for a bad or missing source.

    Finetuned checkpoints do not exist when the DAG is built: they come from the finetune rule,
    whose output folder is their input.
    """
    finetuned = finetune_checkpoints(config)
    files = {}
    for name, entry in model_entries(config).items():
        spec = ModelSpec.from_config(name, entry)
        if name in finetuned:
            files[name] = [finetune_folder(finetuned[name])]
        else:
            files[name] = [str(path) for path in model_input_files(spec)]
    return files


@dataclass(frozen=True)
class PromptSetFacts:
    """What planning needs of a prompt set: its JSONL file, its insertion, whether it has references,
    the digest of its expected answers (None: it has none; tokenscope.outcomes.answers.answers_sha256)."""

    file: str
    insertion: dict[str, Any] | None = None
    has_references: bool = False
    answers_sha256: str | None = None


def load_prompt_sets(entries: Mapping[str, Any]) -> dict[str, PromptSetFacts]:
    """Config `prompt_sets` -> name -> facts, reading (and so checking) every file."""
    facts = {}
    for name, (path, insertion) in resolve_prompt_sets(dict(entries)).items():
        prompts = load_prompt_set(path, insertion)
        facts[name] = PromptSetFacts(
            path,
            insertion,
            has_references(prompts),
            answers_sha256({p.id: p.answer for p in prompts}),
        )
    return facts


class PairTable(NamedTuple):
    """A cross-scoring table: models a and b on the tokens of `source` (a model, or 'reference')."""

    prompt_set: str
    a: str
    b: str
    source: str

    @property
    def path(self) -> str:
        return pair_file(self.prompt_set, self.a, self.b, self.source)


def pair_file(prompt_set: str, a: str, b: str, source: str) -> str:
    return paths.PAIR.format(prompt_set=prompt_set, model_a=a, model_b=b, source=source)


def view_source(model: str, view: str) -> str:
    """Whose tokens a view scores: the model's own generations, or the reference answers."""
    return model if view == "generated" else "reference"


def token_file(prompt_set: str, model: str, view: str) -> str:
    return paths.TOKENS.format(prompt_set=prompt_set, model=model, source=view_source(model, view))


def manifest_file(model: str) -> str:
    return paths.MANIFEST.format(model=model)


def generations_file(prompt_set: str, model: str) -> str:
    return paths.GENERATIONS.format(prompt_set=prompt_set, model=model)


class Plan:
    """The jobs a validated config asks for.

    `prompt_sets` holds the facts of every configured prompt set (load_prompt_sets); `model_files`
    the inputs of each model's preparation (model_files; omitted in tests that plan no runs).
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        prompt_sets: Mapping[str, PromptSetFacts],
        model_files: Mapping[str, list[str]] | None = None,
    ) -> None:
        self.config = config
        self.prompt_sets = dict(prompt_sets)
        self.finetuned = finetune_checkpoints(config)
        self.model_entries = model_entries(config)
        self.models = list(self.model_entries)
        self.model_files = dict(model_files or {})
        self.groups: dict[str, list[str]] = dict(config.get("groups") or {"all": list(self.models)})
        for group, members in self.groups.items():
            require_known(f"groups.{group}", members, self.models, "model")

        generation = config["generation"]
        generated = generation["prompt_sets"]
        self.generated_sets = list(self.prompt_sets) if generated is None else list(generated)
        require_known("generation.prompt_sets", self.generated_sets, self.prompt_sets, "prompt set")
        # What a generation depends on: which prompt sets are generated for every model is not part of it.
        self.generation_options = {key: value for key, value in generation.items() if key != "prompt_sets"}

        self.comparison = config["comparison"]
        require_known("comparison.prompt_sets", self.comparison["prompt_sets"] or [], self.prompt_sets, "prompt set")
        self.compared_sets = (
            self.generated_sets if self.comparison["prompt_sets"] is None else list(self.comparison["prompt_sets"])
        )

        token_view_sets = config["token_view"]["prompt_sets"]
        self.token_view_sets = self.generated_sets if token_view_sets is None else list(token_view_sets)
        require_known("token_view.prompt_sets", self.token_view_sets, self.generated_sets, "generated prompt set")

        self.internals = config["internals"]
        self.internals_models = self._check_internals()
        check_answers_config(config.get("answers"), self.prompt_sets)

        runtime = config["runtime"]
        # How models are loaded: a model job's params (its threads, memory and time limits are not).
        self.load_options = {key: runtime[key] for key in ("device", "dtype", "device_map")}
        self.gpu = gpu_count(runtime["device"])
        finetune = config.get("finetune") or {}
        self.finetune_options = {key: value for key, value in finetune.items() if key != "base"}

        # A figure rule writes a PNG and a vector copy; `all` asks for both, so a changed
        # analysis.vector_format makes the new copies (an output no job requests is never checked).
        self.vector_format = config["analysis"]["vector_format"]

        self.pair_tables = self._pair_tables()
        self._scoring_pairs: dict[tuple[str, str, str], list[str]] = {}
        for table in self.pair_tables:
            for model in dict.fromkeys((table.a, table.b)):
                self._scoring_pairs.setdefault((table.prompt_set, model, table.source), []).append(table.path)
        self.side_by_side_pairs, self.side_by_side_sets = self._check_side_by_side()
        self.outcome_sets, self.pass_at_k = self._check_outcomes()

    def _check_internals(self) -> list[str]:
        """Names in the internals section must exist; filler figures need derived sets."""
        models = self.internals.get("models") or list(self.models)
        require_known("internals.models", models, self.models, "model")
        for analysis in ("marker_attention", "attention_positions", "depth"):
            key = f"internals.{analysis}.prompt_sets"
            require_known(key, self.internals[analysis]["prompt_sets"], self.prompt_sets, "prompt set")
        for prompt_set in self.internals["attention_positions"]["prompt_sets"]:
            if self.prompt_sets[prompt_set].insertion is None:
                raise ConfigError(
                    f"internals.attention_positions.prompt_sets: {prompt_set!r} inserts no tokens; "
                    "list prompt sets defined with 'from' and 'insert'"
                )
        return list(models)

    # Prompt sets and views

    def prompt_file(self, prompt_set: str) -> str:
        return self.prompt_sets[prompt_set].file

    def prompt_insertion(self, prompt_set: str) -> dict[str, Any] | None:
        return self.prompt_sets[prompt_set].insertion

    def answer_params(self, prompt_set: str) -> dict[str, Any]:
        """What grading a set's generations depends on (rule gather_generation's params)."""
        return answer_params(self.config.get("answers"), prompt_set, self.prompt_sets[prompt_set].answers_sha256)

    def source_prompt_set(self, prompt_set: str) -> str:
        """The prompt set a derived set inserts tokens into."""
        return self.config["prompt_sets"][prompt_set]["from"]

    def views(self, prompt_set: str) -> list[str]:
        """'generated': each model on its own generations; 'reference': on the reference answers."""
        scored = ["generated"]
        if self.config["scoring"]["teacher_forcing"] and self.prompt_sets[prompt_set].has_references:
            scored.append("reference")
        return scored

    # Groups and pairs

    def group_token_files(self, prompt_set: str, group: str, view: str) -> list[str]:
        return [token_file(prompt_set, model, view) for model in self.groups[group]]

    def group_manifests(self, group: str) -> list[str]:
        return [manifest_file(model) for model in self.groups[group]]

    def compared_groups(self) -> list[str]:
        """Groups with something to compare (two models or more)."""
        return [group for group, models in self.groups.items() if len(models) >= 2]

    def group_pairs(self, group: str) -> list[tuple[str, str]]:
        """(a, b) model pairs cross-scored in a group: a before b in the group's order."""
        models = self.groups[group]
        if self.comparison["pairs"] == "base":
            return [(models[0], other) for other in models[1:]]
        return [(a, b) for i, a in enumerate(models) for b in models[i + 1 :]]

    def pair_sources(self, prompt_set: str, a: str, b: str, wanted: Iterable[str] | None = None) -> list[str]:
        """Whose tokens a pair scores: `wanted` (default comparison.sources: a, b, reference) as
        model names, 'reference' only where there are references."""
        sources = []
        for source in self.comparison["sources"] if wanted is None else wanted:
            if source == "reference":
                if "reference" in self.views(prompt_set):
                    sources.append("reference")
            else:
                sources.append(a if source == "a" else b)
        return sources

    def _pair_tables(self) -> list[PairTable]:
        """Every pair table the comparison makes, once each, in the order first planned."""
        tables: dict[PairTable, None] = {}
        groups = self.compared_groups()
        for prompt_set in self.compared_sets:
            for group in groups:
                for a, b in self.group_pairs(group):
                    for source in self.pair_sources(prompt_set, a, b):
                        tables[PairTable(prompt_set, a, b, source)] = None
        return list(tables)

    def pair_score_span(self, source: str) -> str | None:
        """scoring.score_span for a pair table of `source`: only reference answers have a span."""
        return self.config["scoring"]["score_span"] if source == "reference" else None

    def pair_summary(self) -> str | None:
        """One line for the log: the model pairs per group and the pair tables (cross_score jobs) planned."""
        if not self.pair_tables:
            return None
        mode = self.comparison["pairs"]
        counts = []
        for group in self.compared_groups():
            k = len(self.groups[group])
            formula = f"K(K-1)/2 = {k * (k - 1) // 2}" if mode == "all" else f"K-1 = {k - 1}"
            counts.append(f"{group!r} K={k}: {formula}")
        return (
            f"comparison.pairs: {mode}: model pairs per group {'; '.join(counts)}; each scored on the tokens "
            f"of each source of comparison.sources, per compared prompt set: "
            f"{len(self.pair_tables)} pair tables (cross_score jobs) in all"
        )

    def scoring_pairs(self, prompt_set: str, model: str, source: str) -> list[str]:
        """Pair tables in which `model` scored the tokens of `source` together with another model."""
        return list(self._scoring_pairs.get((prompt_set, model, source), []))

    def compare_own_token_files(self, prompt_set: str, group: str) -> list[str]:
        """Each model of the group on its own generations."""
        return self.group_token_files(prompt_set, group, "generated")

    def compare_base_pairs(self, prompt_set: str, group: str) -> list[str]:
        """The group's base against each other model, on the base's generations."""
        base, *others = self.groups[group]
        return [pair_file(prompt_set, base, model, base) for model in others]

    # Side-by-side view of two checkpoints

    def _check_side_by_side(self) -> tuple[list[tuple[str, str]], list[str]]:
        """Config `side_by_side`: its model pairs (default: each compared group's base and last
        model) and prompt sets (default: the compared sets), checked."""
        section = self.config.get("side_by_side") or {}
        listed = section.get("pairs")
        if listed is None:
            pairs = [(self.groups[group][0], self.groups[group][-1]) for group in self.compared_groups()]
        else:
            pairs = []
            for a, b in listed:
                require_known("side_by_side.pairs", (a, b), self.models, "model")
                if a == b:
                    raise ConfigError(f"side_by_side.pairs: [{a}, {b}] pairs a model with itself; name two models")
                pairs.append((a, b))
        sets = section.get("prompt_sets")
        sets = self.compared_sets if sets is None else list(sets)
        require_known("side_by_side.prompt_sets", sets, self.prompt_sets, "prompt set")
        return list(dict.fromkeys(pairs)), list(sets)

    def side_by_side_sources(self, prompt_set: str, a: str, b: str) -> list[str]:
        """The shared texts of a pair's pages: side_by_side.sources as pair-table sources."""
        wanted = (self.config.get("side_by_side") or {}).get("sources", ["a", "reference"])
        return self.pair_sources(prompt_set, a, b, wanted)

    def side_by_side_generations(self, prompt_set: str, a: str, b: str) -> list[str]:
        """Both models' generations tables, where the set is generated (else the pages show none)."""
        if prompt_set not in self.generated_sets:
            return []
        return [generations_file(prompt_set, model) for model in (a, b)]

    def side_by_side_targets(self) -> list[str]:
        return [
            paths.SIDE_BY_SIDE.format(prompt_set=prompt_set, model_a=a, model_b=b, source=source)
            for prompt_set in self.side_by_side_sets
            for a, b in self.side_by_side_pairs
            for source in self.side_by_side_sources(prompt_set, a, b)
        ]

    def marker_attention_tables(self, prompt_set: str, group: str) -> list[str]:
        return [
            paths.INTERNALS.format(prompt_set=prompt_set, model=model, table="marker_attention")
            for model in self.groups[group]
            if model in self.internals_models
        ]

    # Targets

    def comparison_targets(self) -> list[str]:
        groups = self.compared_groups()
        trends = [
            paths.TRENDS.format(prompt_set=ps, group=group, suffix=suffix)
            for ps in self.compared_sets
            for group in groups
            for suffix in ("png", self.vector_format)
        ]
        return [table.path for table in self.pair_tables] + trends

    def token_view_targets(self) -> list[str]:
        return [
            paths.TOKEN_VIEW.format(prompt_set=prompt_set, model=model, source=view_source(model, view))
            for prompt_set in self.token_view_sets
            for view in self.views(prompt_set)
            for model in self.models
        ]

    def internals_targets(self) -> list[str]:
        # A group's marker-attention figure draws its members that the internals run on: none, no figure.
        targets = [
            paths.MARKER_ATTENTION_FIGURE.format(prompt_set=prompt_set, group=group, suffix=suffix)
            for prompt_set in self.internals["marker_attention"]["prompt_sets"]
            for group, members in self.groups.items()
            if any(model in self.internals_models for model in members)
            for suffix in ("png", self.vector_format)
        ]
        for analysis in ("attention_positions", "depth"):
            targets += [
                paths.INTERNALS_FIGURES.format(prompt_set=prompt_set, model=model, analysis=analysis)
                for prompt_set in self.internals[analysis]["prompt_sets"]
                for model in self.internals_models
            ]
        return targets

    # Outcomes (tokenscope.outcomes: accuracy, pass@k, AUROC of token statistics, entropy fit)

    def _check_outcomes(self) -> tuple[list[str], list[int]]:
        """Config `outcomes`: its prompt sets (default: every generated set with answers; a listed set
        must be generated and have answers) and the k values of pass@k (at most generation.n_samples)."""
        section = self.config.get("outcomes") or {}
        listed = section.get("prompt_sets")
        if listed is None:
            sets = [name for name in self.generated_sets if self.prompt_sets[name].answers_sha256 is not None]
        else:
            sets = list(listed)
            require_known("outcomes.prompt_sets", sets, self.generated_sets, "generated prompt set")
            for name in sets:
                if self.prompt_sets[name].answers_sha256 is None:
                    raise ConfigError(
                        f"outcomes.prompt_sets: prompt set {name!r} ({self.prompt_file(name)}) has no answers: "
                        "no prompt line has an 'answer'"
                    )
        ks = pass_at_k_values(section.get("pass_at_k"), self.config["generation"]["n_samples"])
        return sets, ks

    def outcome_settings(self) -> dict[str, Any]:
        """What changes the outcome tables (rule outcome_stats' params): k values, quantile, bootstrap."""
        section = self.config.get("outcomes") or {}
        settings = {key: section[key] for key in ("high_entropy_quantile", "n_boot", "ci", "seed") if key in section}
        return {"pass_at_k": list(self.pass_at_k), **settings}

    def outcome_token_files(self, prompt_set: str, group: str) -> list[str]:
        """Each model of the group on its own generations."""
        return self.group_token_files(prompt_set, group, "generated")

    def outcome_generation_files(self, prompt_set: str, group: str) -> list[str]:
        return [generations_file(prompt_set, model) for model in self.groups[group]]

    def outcome_targets(self) -> list[str]:
        targets = []
        for prompt_set in self.outcome_sets:
            for group in self.groups:
                targets += [
                    paths.OUTCOME_TABLES.format(prompt_set=prompt_set, group=group),
                    paths.OUTCOME_GENERATIONS.format(prompt_set=prompt_set, group=group),
                ]
                for figure in OUTCOME_FIGURES:
                    targets += [
                        paths.OUTCOME_FIGURE.format(prompt_set=prompt_set, group=group, figure=figure, suffix=suffix)
                        for suffix in ("png", self.vector_format)
                    ]
        return targets

    def final_targets(self) -> list[str]:
        """Everything the default target `all` asks for."""
        targets = []
        for prompt_set in self.generated_sets:
            for view in self.views(prompt_set):
                for model in self.models:
                    targets.append(token_file(prompt_set, model, view))
                    source = view_source(model, view)
                    targets.append(
                        paths.ANALYSIS.format(prompt_set=prompt_set, model=model, source=source, file="describe.csv")
                    )
                for group in self.groups:
                    where = {"prompt_set": prompt_set, "group": group, "view": view}
                    for suffix in ("png", self.vector_format):
                        targets.append(paths.ENTROPY_HIST.format(**where, suffix=suffix))
                    targets.append(paths.PROMPT_FIGURES.format(**where))
                    targets.append(paths.SUMMARY.format(**where, file="describe.csv"))
        return (
            targets
            + self.internals_targets()
            + self.comparison_targets()
            + self.token_view_targets()
            + self.side_by_side_targets()
            + self.outcome_targets()
            + [paths.RUN_RECORD]
        )


def plan_workflow(config: dict[str, Any]) -> Plan:
    """The plan of a validated config, reading the model folders and prompt set files it names.

    Raises ConfigError, ModelError or PromptSetError (one line each), in that order of checks:
    the finetune section, the models, the prompt set files, then the names the sections use.
    """
    normalize_scoring_config(config["scoring"])  # the deprecated scoring.top_k, mapped once here
    check_config_metrics(config)
    files = model_files(config)
    return Plan(config, load_prompt_sets(config["prompt_sets"]), files)
