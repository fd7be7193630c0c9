"""Models: sources, preparation and manifest, loading, anatomy (backbone, unembedding, layers, final norm,
hooks), tokenizers and token text, and the type aliases of models and tokenizers."""
