"""tokenscope: per-token measurements of LLM checkpoints.

The notebook-facing API, imported on first use (so that `import tokenscope` and the workflow's
planning stay free of torch):

    from tokenscope import LoadOptions, load_model, load_prompt_set, run_generation, run_teacher_forcing

Everything else lives in the subpackages named by pipeline stage: inputs, model, generation,
scoring, internals, analysis, figures, report, finetune, workflow.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_API = {
    "LoadOptions": "tokenscope.model.loading",
    "load_model": "tokenscope.model.loading",
    "load_prompt_set": "tokenscope.inputs.prompts",
    "run_generation": "tokenscope.generation.run",
    "run_teacher_forcing": "tokenscope.scoring.teacher_forcing",
    "score_pair": "tokenscope.scoring.cross_scoring",
    "TokenscopeError": "tokenscope.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(import_module(_API[name]), name)
    raise AttributeError(f"module 'tokenscope' has no attribute {name!r}")
