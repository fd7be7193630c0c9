"""Internals: marker attention, attention per position, depth convergence and logit lens, and their tables."""
