"""Scoring: logits -> entropy, logprob, rank, top-k and KL (the one home of every formula); teacher forcing;
cross-scoring; token and pair tables."""
