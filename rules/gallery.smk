# `snakemake --cores all gallery`: copy figures of the default run into docs/gallery/ for the
# README, so the pictures there are the workflow's own output.

GALLERY = {
    "marker_attention.png": "results/figures/internals/math24/all/marker_attention.png",
    "attention_positions.png": "results/figures/internals/smoke_filler/smollm2/attention_positions/attention_positions-capital.png",
    "convergence.png": "results/figures/internals/smoke_filler/smollm2/depth/convergence-capital.png",
    "logit_lens.png": "results/figures/internals/smoke_filler/smollm2/depth/logit_lens-capital.png",
    "trends.png": "results/comparison/math24/all/trends.png",
}


rule gallery:
    """Copy the README's figures from results/ into docs/gallery/."""
    input:
        "results/figures/internals/math24/all/marker_attention.png",
        "results/figures/internals/smoke_filler/smollm2/attention_positions",
        "results/figures/internals/smoke_filler/smollm2/depth",
        "results/comparison/math24/all/trends.png",
    output:
        [f"docs/gallery/{name}" for name in GALLERY],
    log:
        "logs/gallery.log",
    conda:
        "../envs/tokenscope.yaml"
    threads: 1
    resources:
        cpus_per_task=1,
        mem_mb=200,
        runtime=5,
    params:
        sources=list(GALLERY.values()),
    script:
        "../scripts/gallery.py"
