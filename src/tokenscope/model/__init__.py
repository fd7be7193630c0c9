"""Models: sources, preparation and manifest, loading, anatomy (backbone, unembedding, layers, final norm, hooks), tokenizers and token text."""
