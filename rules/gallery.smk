# `snakemake --cores all gallery`: copy figures of the default run into docs/gallery/ for the
# README, so the pictures there are the workflow's own output.

GALLERY_MARKER_ATTENTION = paths.MARKER_ATTENTION_FIGURE.format(
    prompt_set="math24", group="all", suffix="png"
)
GALLERY_ATTENTION_POSITIONS = paths.INTERNALS_FIGURES.format(
    prompt_set="smoke_filler", model="smollm2", analysis="attention_positions"
)
GALLERY_DEPTH = paths.INTERNALS_FIGURES.format(
    prompt_set="smoke_filler", model="smollm2", analysis="depth"
)
GALLERY_TRENDS = paths.TRENDS.format(prompt_set="math24", group="all", suffix="png")
# README name -> the figure it shows (figure folders: a figure per prompt, here prompt "capital").
GALLERY = {
    "marker_attention.png": GALLERY_MARKER_ATTENTION,
    "attention_positions.png": f"{GALLERY_ATTENTION_POSITIONS}/attention_positions-capital.png",
    "convergence.png": f"{GALLERY_DEPTH}/convergence-capital.png",
    "logit_lens.png": f"{GALLERY_DEPTH}/logit_lens-capital.png",
    "trends.png": GALLERY_TRENDS,
}


rule gallery:
    """Copy the README's figures from results/ into docs/gallery/."""
    input:
        GALLERY_MARKER_ATTENTION,
        GALLERY_ATTENTION_POSITIONS,
        GALLERY_DEPTH,
        GALLERY_TRENDS,
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
