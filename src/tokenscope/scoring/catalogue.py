"""The metric catalogue: every per-token and per-pair metric column, declared once.

Each entry says what a column is (name, unit, Arrow type, whether it can be null, which tables
carry it), how it is computed (the attribute of `scoring.formulas.TokenMetrics` or `PairMetrics`
it is written from, and its formula) and how the pages colour it. The Arrow schemas
(`scoring.tables`), the decode loop's result buffers and host transfer (`generation.decode`),
the token and side-by-side views' metric lists and the config's metric keys are derived from it,
and a test checks that docs/schema.md documents exactly these columns with these units.

Adding a metric: an entry here, its formula (a field or property of TokenMetrics/PairMetrics in
`scoring.formulas`, or a sampler metric in `generation.sampling.sampler_metrics`), docs/schema.md
and tests. Torch-free: planning reads the metric keys when Snakemake parses the workflow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa

from tokenscope.errors import ConfigError

# The tables a metric can be a column of: a model's own generated tokens and teacher-forced
# (reference) tokens share the per-token table's schema; pair tables hold two models on one token.
Table = Literal["generated", "teacher_forced", "pair"]
TOKEN_TABLES: frozenset[Table] = frozenset({"generated", "teacher_forced"})


@dataclass(frozen=True)
class PageScale:
    """How a page colours tokens by a metric column: the key a config selects it by, the label and
    description the page shows (pair pages fill in the models' names `{a}` and `{b}`), and the
    values (the column, or minus the column)."""

    key: str
    label: str
    description: str
    negate: bool = False
    diverging: bool = False  # signed values, coloured around 0 by their absolute value


@dataclass(frozen=True)
class Metric:
    """One metric column of the per-token or pair tables."""

    name: str  # the column
    unit: str  # as docs/schema.md's unit column writes it
    arrow_type: pa.DataType
    tables: frozenset[Table]
    field: str  # the TokenMetrics / PairMetrics attribute the column is written from
    definition: str  # one line
    formula: str
    nullable: bool = False  # null in some rows of a table that carries it
    page: PageScale | None = None
    with_alternatives: bool = False  # pair tables: present only when scoring.n_alternatives > 0

    @property
    def per_alternative(self) -> bool:
        """One value per recorded alternative (a list column, k wide) rather than one per token."""
        return pa.types.is_list(self.arrow_type)

    @property
    def value_type(self) -> pa.DataType:
        return self.arrow_type.value_type if self.per_alternative else self.arrow_type


_RAW = "p = softmax(raw logits) over the full vocabulary, fp32"

METRICS: tuple[Metric, ...] = (
    Metric(
        "entropy",
        "nats",
        pa.float32(),
        TOKEN_TABLES,
        "entropy",
        "entropy of the next-token distribution, raw logits, full vocabulary",
        f"H = −Σ_v p_v log p_v, {_RAW}",
        page=PageScale(
            "entropy",
            "entropy",
            "entropy (nats) of the next-token distribution, full vocabulary, raw logits",
        ),
    ),
    Metric(
        "logprob",
        "nats",
        pa.float32(),
        TOKEN_TABLES,
        "logprob",
        "log-probability of the token under that distribution",
        "log p_token = logit_token − logsumexp(logits)",
        page=PageScale("surprisal", "surprisal", "−log p of the token (nats)", negate=True),
    ),
    Metric(
        "prob",
        "probability",
        pa.float32(),
        TOKEN_TABLES,
        "prob",
        "probability of the token",
        "exp(logprob)",
    ),
    Metric(
        "rank",
        "rank",
        pa.int32(),
        TOKEN_TABLES,
        "rank",
        "rank of the token (1 = argmax)",
        "1 + #{v : logit_v > logit_token}",
    ),
    Metric(
        "varentropy",
        "nats²",
        pa.float32(),
        TOKEN_TABLES,
        "varentropy",
        "variance of the surprisal under the raw distribution",
        "Σ_v p_v (log p_v + H)², summed around H",
        page=PageScale(
            "varentropy",
            "varentropy",
            "variance of the surprisal under the next-token distribution (nats²): "
            "high where a few likely tokens sit beside a long tail",
        ),
    ),
    Metric(
        "margin",
        "nats",
        pa.float32(),
        TOKEN_TABLES,
        "margin",
        "log p of the most probable token minus that of the second",
        "logit_(1) − logit_(2)",
        page=PageScale(
            "margin",
            "margin",
            "log p of the most probable next token minus that of the second (nats): large where the model is sure",
        ),
    ),
    Metric(
        "sampling_entropy",
        "nats",
        pa.float32(),
        frozenset({"generated"}),
        "sampling_entropy",
        "entropy of the distribution the token was drawn from (after temperature, top-k, top-p)",
        "−Σ_v q_v log q_v, q = softmax(logits / T) over the tokens top-k and top-p keep; 0 when greedy",
        nullable=True,
    ),
    Metric(
        "tempered_entropy",
        "nats",
        pa.float32(),
        frozenset({"generated"}),
        "tempered_entropy",
        "entropy of the distribution at the sampler's temperature, before top-k and top-p",
        "−Σ_v q_v log q_v, q = softmax(raw logits / T), full vocabulary; T = 1 when greedy",
        nullable=True,
    ),
    Metric(
        "topk_ids",
        "token id",
        pa.list_(pa.int32()),
        TOKEN_TABLES,
        "topk_ids",
        "the k most probable token ids, most probable first",
        "top-k of the raw logits, k = scoring.n_alternatives",
    ),
    Metric(
        "topk_pieces",
        "text",
        pa.list_(pa.string()),
        TOKEN_TABLES,
        "topk_ids",
        "their raw vocabulary pieces",
        "convert_ids_to_tokens(topk_ids)",
    ),
    Metric(
        "topk_probs",
        "probability",
        pa.list_(pa.float32()),
        TOKEN_TABLES,
        "topk_probs",
        "their probabilities",
        "exp(log p of each of topk_ids)",
    ),
    Metric(
        "logprob_a",
        "nats",
        pa.float32(),
        frozenset({"pair"}),
        "logprob_a",
        "log-probability of the token under a",
        "log p_a(token)",
    ),
    Metric(
        "logprob_b",
        "nats",
        pa.float32(),
        frozenset({"pair"}),
        "logprob_b",
        "log-probability of the token under b",
        "log p_b(token)",
    ),
    Metric(
        "logprob_diff",
        "nats",
        pa.float32(),
        frozenset({"pair"}),
        "logprob_diff",
        "how much more likely b finds the token than a",
        "logprob_b − logprob_a",
        page=PageScale(
            "logprob_diff",
            "log p({b}) − log p({a})",
            "log-probability of the token under {b} minus under {a} (nats): blue where {b} gives it more "
            "probability, red where less",
            diverging=True,
        ),
    ),
    Metric(
        "entropy_a",
        "nats",
        pa.float32(),
        frozenset({"pair"}),
        "entropy_a",
        "entropy of a's next-token distribution",
        "H(p_a)",
    ),
    Metric(
        "entropy_b",
        "nats",
        pa.float32(),
        frozenset({"pair"}),
        "entropy_b",
        "entropy of b's next-token distribution",
        "H(p_b)",
    ),
    Metric(
        "kl_a_b",
        "nats",
        pa.float32(),
        frozenset({"pair"}),
        "kl_a_b",
        "KL divergence from a's next-token distribution to b's",
        "KL(a‖b) = Σ_v p_a(v) (log p_a(v) − log p_b(v))",
        page=PageScale(
            "kl_a_b",
            "KL({a} ‖ {b})",
            "KL divergence (nats) from {a}'s next-token distribution to {b}'s, full vocabulary",
        ),
    ),
    Metric(
        "kl_b_a",
        "nats",
        pa.float32(),
        frozenset({"pair"}),
        "kl_b_a",
        "KL divergence from b's next-token distribution to a's",
        "KL(b‖a) = Σ_v p_b(v) (log p_b(v) − log p_a(v))",
        page=PageScale(
            "kl_b_a",
            "KL({b} ‖ {a})",
            "KL divergence (nats) from {b}'s next-token distribution to {a}'s, full vocabulary",
        ),
    ),
    Metric(
        "topk_ids_a",
        "token id",
        pa.list_(pa.int32()),
        frozenset({"pair"}),
        "topk_ids_a",
        "a's k most probable next tokens",
        "top-k of a's raw logits",
        with_alternatives=True,
    ),
    Metric(
        "topk_probs_a",
        "probability",
        pa.list_(pa.float32()),
        frozenset({"pair"}),
        "topk_probs_a",
        "their probabilities under a",
        "exp(log p_a of each of topk_ids_a)",
        with_alternatives=True,
    ),
    Metric(
        "topk_ids_b",
        "token id",
        pa.list_(pa.int32()),
        frozenset({"pair"}),
        "topk_ids_b",
        "b's k most probable next tokens",
        "top-k of b's raw logits",
        with_alternatives=True,
    ),
    Metric(
        "topk_probs_b",
        "probability",
        pa.list_(pa.float32()),
        frozenset({"pair"}),
        "topk_probs_b",
        "their probabilities under b",
        "exp(log p_b of each of topk_ids_b)",
        with_alternatives=True,
    ),
)

BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}


def metrics_of(table: Table, *, with_alternatives: bool = True) -> tuple[Metric, ...]:
    """The metric columns of `table`, in column order."""
    return tuple(m for m in METRICS if table in m.tables and (with_alternatives or not m.with_alternatives))


# The per-token table's metric columns: a model's own generations and teacher-forced tokens share
# one schema, so a metric of one kind only is null in the other's rows.
TOKEN_METRICS: tuple[Metric, ...] = tuple(m for m in METRICS if m.tables & TOKEN_TABLES)
PAIR_METRICS: tuple[Metric, ...] = metrics_of("pair")


@dataclass(frozen=True)
class RecordedField:
    """A TokenMetrics field the decode loop records per generated token: a value, or k values."""

    name: str
    value_type: pa.DataType
    per_alternative: bool


def _recorded_fields() -> tuple[RecordedField, ...]:
    # A column written from a derived property (prob, topk_probs) names the field it derives from
    # in DERIVED_FROM; the decode loop records only fields.
    fields: dict[str, RecordedField] = {}
    for metric in metrics_of("generated"):
        name = DERIVED_FROM.get(metric.field, metric.field)
        if name not in fields:
            fields[name] = RecordedField(name, metric.value_type, metric.per_alternative)
    return tuple(fields.values())


# Columns computed on the host from a recorded field when a table is written.
DERIVED_FROM = {"prob": "logprob", "topk_probs": "topk_logprobs"}
GENERATED_FIELDS: tuple[RecordedField, ...] = _recorded_fields()


def page_metrics(table: Table) -> tuple[tuple[Metric, PageScale], ...]:
    """The metrics a page of `table` ("generated" for the token view, "pair" for the side-by-side
    view) can colour tokens by, with their page scales, in selector order."""
    return tuple((m, m.page) for m in metrics_of(table) if m.page is not None)


def page_expression(metric: Metric, scale: PageScale) -> str:
    """The page values of `metric` as an SQL expression over its table's columns."""
    return f"-{metric.name}" if scale.negate else metric.name


def config_metric_keys() -> dict[str, tuple[str, ...]]:
    """The values each metric-choosing config key accepts: a per-token column with one value per
    token (quantile bins), a token-view page metric (or `kl`: KL against the first model that
    scored the same tokens), a side-by-side page metric."""
    return {
        "analysis.qcut_metric": tuple(m.name for m in TOKEN_METRICS if not m.per_alternative),
        "token_view.metric": (*(scale.key for _, scale in page_metrics("generated")), "kl"),
        "side_by_side.metric": tuple(scale.key for _, scale in page_metrics("pair")),
    }


def check_config_metrics(config: dict[str, Any]) -> None:
    """A ConfigError naming the key where a validated config chooses a metric the catalogue lacks."""
    for key, allowed in config_metric_keys().items():
        section, name = key.split(".")
        value = config.get(section, {}).get(name)
        if value is not None and value not in allowed:
            raise ConfigError(f"invalid config at {key}: {value!r} is not one of {list(allowed)}")
