"""Finetune: the generated reasoning data set and the short deterministic training run."""
