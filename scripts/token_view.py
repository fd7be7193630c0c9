import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../src")
from pathlib import Path

import pandas as pd

from tokenscope.inputs.prompts import load_prompt_set
from tokenscope.model.loading import load_prepared_tokenizer
from tokenscope.model.token_text import VocabularyStrings
from tokenscope.report.token_view import PageContext, PairScores, read_token_file, write_token_views
from tokenscope.workflow.jobs import run_script


def main(smk):
    model, source = smk.wildcards.model, smk.wildcards.source
    tokens, topk_ids, topk_probs = read_token_file(smk.input.tokens)
    tokenizer = load_prepared_tokenizer(Path(smk.input.manifest).parent)
    prompts = {p.id: p for p in load_prompt_set(smk.input.prompts, smk.params.insertion)}
    finish_reasons = {}
    if smk.input.generations:
        generations = pd.read_parquet(smk.input.generations, columns=["prompt_id", "sample", "finish_reason"])
        finish_reasons = dict(
            zip(
                zip(generations["prompt_id"], generations["sample"].astype(int), strict=True),
                generations["finish_reason"],
                strict=True,
            )
        )
    pair_scores = [PairScores.of(pd.read_parquet(path), model) for path in smk.input.pairs]
    paths = write_token_views(
        tokens,
        topk_ids,
        topk_probs,
        VocabularyStrings.from_tokenizer(tokenizer),
        smk.output[0],
        PageContext(model=model, prompt_set=smk.wildcards.prompt_set, source=source),
        pair_scores=pair_scores,
        prompts=prompts,
        finish_reasons=finish_reasons,
        initial_metric=smk.params.metric,
    )
    print(f"{len(paths)} pages in {smk.output[0]}", file=sys.stderr)


run_script(snakemake, main)
