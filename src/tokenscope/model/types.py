"""Type aliases of the models, tokenizers and token ids that tokenscope passes around.

`CausalLM` is a transformers causal language model: a `PreTrainedModel` (so also a torch
`nn.Module`) with a language-modelling head, as `AutoModelForCausalLM` loads it. `Tokenizer` is a
transformers tokenizer (`PreTrainedTokenizerBase`, fast or slow). `TokenIds` is one sequence of
token ids: a list or tuple of ints, or a 1-d integer numpy array.

Importing this module imports neither torch nor transformers: the aliases name their classes as
strings, resolved only by a type checker. Modules that must stay torch-free use them in
annotations only, under `from __future__ import annotations`:

    from typing import TYPE_CHECKING

    if TYPE_CHECKING:
        from tokenscope.model.types import CausalLM, Tokenizer
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

CausalLM: TypeAlias = "PreTrainedModel"
Tokenizer: TypeAlias = "PreTrainedTokenizerBase"
TokenIds: TypeAlias = "Sequence[int] | np.ndarray"

__all__ = ["CausalLM", "TokenIds", "Tokenizer"]
