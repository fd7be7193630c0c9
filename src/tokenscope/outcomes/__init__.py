"""Outcomes of generations: final answers and correctness (answers), statistics over prompts (stats), the
entropy-performance fit across checkpoints (fit)."""
