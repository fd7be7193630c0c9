"""The KV cache of the decode loop: preallocated layers written in place, rows dropped and refilled,
leading columns dropped when no row needs them."""

from __future__ import annotations

from typing import Any, cast

from torch import Tensor
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

from tokenscope.model.types import CausalLM


class PreallocatedLayer(DynamicLayer):
    """A KV cache layer over preallocated buffers [rows, heads, columns, dim].

    Appending a step writes in place (a growing cache copies every layer's keys and values at
    every step) and attention sees only the filled columns (a static cache attends to them all).
    Rows can be dropped and refilled.
    """

    keys: Tensor  # always set (DynamicLayer declares them optional)
    values: Tensor

    def __init__(self, keys: Tensor, values: Tensor, columns: int) -> None:
        super().__init__()
        rows, heads, width, _ = keys.shape
        self.key_buffer = keys.new_zeros((rows, heads, columns, keys.shape[-1]))
        self.value_buffer = values.new_zeros((rows, heads, columns, values.shape[-1]))
        self.key_buffer[:, :, :width] = keys
        self.value_buffer[:, :, :width] = values
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        self.length = width
        self._expose()

    def _expose(self) -> None:
        self.keys = self.key_buffer[:, :, : self.length]
        self.values = self.value_buffer[:, :, : self.length]

    def update(self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        end = self.length + key_states.shape[-2]
        if end > self.key_buffer.shape[2]:
            raise RuntimeError("KV cache buffer full")  # rows stop at max_new_tokens, so this is a bug
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self.length = end
        self._expose()
        return self.keys, self.values

    def keep_rows(self, rows: Tensor) -> None:
        self.key_buffer, self.value_buffer = self.key_buffer[rows], self.value_buffer[rows]
        self._expose()

    def drop_leading(self, shift: int) -> None:
        """Drop the first `shift` filled columns (masked out for every row); the rest move left.

        Copied in chunks no wider than `shift`, so no chunk overlaps its source and no second
        buffer is needed.
        """
        kept = self.length - shift
        for buffer in (self.key_buffer, self.value_buffer):
            for start in range(0, kept, shift):
                end = min(start + shift, kept)
                buffer[:, :, start:end] = buffer[:, :, start + shift : end + shift]
        self.length = kept
        self._expose()

    def write_rows(self, rows: Tensor, keys: Tensor, values: Tensor) -> None:
        """Place prefilled prompts in `rows`, ending right before the current column."""
        self.key_buffer[rows, :, self.length - keys.shape[2] : self.length] = keys
        self.value_buffer[rows, :, self.length - values.shape[2] : self.length] = values
        self._expose()


def has_sliding_window(model: CausalLM) -> bool:
    """Whether some attention layers see only a window of the most recent cache columns."""
    return any(DynamicCache(config=model.config).is_sliding)


def preallocated_layers(cache: Cache) -> list[PreallocatedLayer]:
    """The layers of a cache that build_cache made without a sliding window: all preallocated."""
    return cast("list[PreallocatedLayer]", cache.layers)


def build_cache(model: CausalLM, prompt_layers: list[tuple[Tensor, Tensor]], columns: int, sliding: bool) -> Cache:
    """Preallocated layers holding the prefilled prompts; transformers' own growing cache for
    sliding-window models (those generate one sequence at a time, see `generate`)."""
    if sliding:
        return DynamicCache(ddp_cache_data=prompt_layers, config=model.config)
    return Cache(layers=[PreallocatedLayer(k, v, columns) for k, v in prompt_layers])
