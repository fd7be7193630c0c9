"""Generation: seeded sampling, the preallocated KV cache and the decode loop that scores its own tokens."""
