"""Scoring: logits -> entropy, varentropy, margin, logprob, rank, top-k and KL (the one home of every
formula); teacher forcing; cross-scoring; token and pair tables."""
