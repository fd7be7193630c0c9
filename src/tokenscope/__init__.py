"""tokenscope: per-token measurements of LLM checkpoints."""

__version__ = "0.1.0"
