"""The KV cache of the decode loop: preallocated layers written in place, rows dropped and refilled,
leading columns dropped when no row needs them; sliding-window layers hold only their window."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from torch import Tensor
from transformers.cache_utils import Cache, DynamicLayer, get_layer_types_and_kwargs

from tokenscope.errors import ModelError
from tokenscope.model.types import CausalLM

SUPPORTED_LAYER_TYPES = ("full_attention", "sliding_attention")


def window_slack(window: int) -> int:
    """Columns a sliding-window layer's buffer holds beyond its window: it slides (moves its last
    `window` columns to the front) once every `slack` steps, so the copy costs about
    window / slack columns per step while the buffer stays within window + slack columns."""
    return max(16, window // 4)


class PreallocatedLayer(DynamicLayer):
    """A KV cache layer over preallocated buffers [rows, heads, buffer columns, dim].

    Appending a step writes in place (a growing cache copies every layer's keys and values at
    every step) and attention sees only the filled columns (a static cache attends to them all).
    Rows can be dropped and refilled.

    Columns are counted as the decode loop counts them (its attention mask's columns): `length`
    are filled. A full-attention layer's buffer holds all of them. A sliding-window layer
    (`window`) holds only columns from `held_from` on, in a buffer of window + window_slack
    columns (or fewer, when the cache has fewer): the columns before its window are never read
    again, so it moves its last `window` columns to the front when the buffer is full. Its
    attention sees only the last `window` filled columns and the new ones: `get_mask_sizes` tells
    transformers' mask builders which columns those are (kv_offset), so the model's own
    sliding-window mask is built over them. Every row's tokens fill contiguous columns ending at
    the current one (left padding before them, joining prompts written right before the current
    column, compaction shifting all columns alike), so a distance in columns is the distance in
    positions the window counts.
    """

    keys: Tensor  # always set (DynamicLayer declares them optional)
    values: Tensor
    # Preallocated like a static cache. transformers reads this to build one-token decode masks on
    # the device instead of testing the padding mask on the host first (masking_utils skips its
    # is_causal shortcut for compileable caches), which would wait for a GPU at every step.
    is_compileable = True

    def __init__(
        self, key_buffer: Tensor, value_buffer: Tensor, length: int, window: int | None = None, held_from: int = 0
    ) -> None:
        """Buffers [rows, heads, buffer columns, dim] holding columns `held_from` to `length` - 1."""
        super().__init__()
        self.key_buffer, self.value_buffer = key_buffer, value_buffer
        self.dtype, self.device, self.is_initialized = key_buffer.dtype, key_buffer.device, True
        self.length, self.held_from = length, held_from
        self.window = window
        self.is_sliding = window is not None  # read by transformers (Cache.is_sliding) to size the masks
        if window is None and held_from:
            raise ValueError("a full-attention layer holds every column")
        self._expose()

    def _expose(self) -> None:
        self.keys = self.key_buffer[:, :, : self.length - self.held_from]
        self.values = self.value_buffer[:, :, : self.length - self.held_from]

    def _first_visible(self) -> int:
        """The first column attention reads at the next step (0 without a window). A whole window of
        past columns is kept (transformers keeps window - 1): the mask decides, not the slice."""
        return 0 if self.window is None else max(0, self.length - self.window)

    def _move_left(self, shift: int) -> None:
        """Move the held columns after the first `shift` to the front of the buffers, in chunks no
        wider than `shift`, so no chunk overlaps its source and no second buffer is needed. Past
        16 chunks (a sliding-window layer's compaction can move its columns by as little as one;
        a full-attention layer's never moves fewer than a sixteenth, see cache_margin) the columns
        go through one copy instead, at most a sliding window's buffer."""
        kept = self.length - self.held_from - shift
        for buffer in (self.key_buffer, self.value_buffer):
            if kept > 16 * shift:
                buffer[:, :, :kept] = buffer[:, :, shift : shift + kept].clone()
                continue
            for start in range(0, kept, shift):
                end = min(start + shift, kept)
                buffer[:, :, start:end] = buffer[:, :, start + shift : end + shift]

    def get_seq_length(self) -> int:
        return self.length

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        first = self._first_visible()
        return self.length - first + query_length, first

    def update(self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
        first = self._first_visible()
        new = key_states.shape[-2]
        if self.length - self.held_from + new > self.key_buffer.shape[2] and self.window is not None:
            slide = self.length - self.window - self.held_from  # keep the last `window` columns
            if slide > 0:
                self._move_left(slide)
                self.held_from += slide
        end = self.length - self.held_from + new
        if end > self.key_buffer.shape[2]:
            raise RuntimeError("KV cache buffer full")  # rows stop at max_new_tokens, so this is a bug
        self.key_buffer[:, :, end - new : end] = key_states
        self.value_buffer[:, :, end - new : end] = value_states
        self.length += new
        self._expose()
        return self.keys[:, :, first - self.held_from :], self.values[:, :, first - self.held_from :]

    def keep_rows(self, rows: Tensor) -> None:
        self.key_buffer, self.value_buffer = self.key_buffer[rows], self.value_buffer[rows]
        self._expose()

    def drop_leading(self, shift: int) -> None:
        """Drop the first `shift` filled columns (masked out for every row); the rest move left.

        A sliding-window layer that no longer holds them only renumbers its columns."""
        if shift > self.held_from:
            self._move_left(shift - self.held_from)
            self.held_from = shift
        self.length -= shift
        self.held_from -= shift
        self._expose()

    def write_rows(self, rows: Tensor, keys: Tensor, values: Tensor) -> None:
        """Place prefilled prompts [rows, heads, prompt columns, dim] in `rows`, ending right before
        the current column (a sliding-window layer keeps only the columns it holds)."""
        held = min(keys.shape[2], self.length - self.held_from)
        end = self.length - self.held_from
        self.key_buffer[rows, :, end - held : end] = keys[:, :, keys.shape[2] - held :]
        self.value_buffer[rows, :, end - held : end] = values[:, :, values.shape[2] - held :]
        self._expose()


def model_label(model: CausalLM) -> str:
    """How an error names a model: its checkpoint path or name, and its config's model type."""
    config = model.config
    name = getattr(config, "_name_or_path", None) or getattr(model, "name_or_path", None) or type(model).__name__
    return f"{name} ({getattr(config, 'model_type', None) or type(model).__name__})"


def attention_windows(model: CausalLM) -> list[int | None]:
    """Per decoder layer, the sliding window of its attention (None: full attention), read from
    the config as transformers reads it (`layer_types`, else `sliding_window` /
    `attention_chunk_size`; Qwen2's `use_sliding_window` and `max_window_layers` are folded into
    its `layer_types`).

    Raises a one-line ModelError naming the model and the layout for what the decode loop cannot
    run: layer types other than full and sliding-window attention (chunked attention, linear
    attention, state-space, hybrid or KV-sharing layers) and bidirectional attention.
    """
    config = model.config.get_text_config(decoder=True)
    if getattr(config, "is_causal", True) is False or getattr(config, "use_bidirectional_attention", False):
        raise ModelError(
            f"model {model_label(model)}: bidirectional attention is not supported by tokenscope's decode loop"
        )
    layer_types, kwargs = get_layer_types_and_kwargs(config)
    unsupported = sorted({t for t in layer_types if t not in SUPPORTED_LAYER_TYPES})
    if unsupported:
        raise ModelError(
            f"model {model_label(model)}: layer type(s) {', '.join(unsupported)} not supported by tokenscope's "
            f"decode loop (supported: {', '.join(SUPPORTED_LAYER_TYPES)})"
        )
    windows: list[int | None] = []
    for layer_type, layer_kwargs in zip(layer_types, kwargs, strict=True):
        window = layer_kwargs.get("sliding_window") if layer_type == "sliding_attention" else None
        if layer_type == "sliding_attention" and not (isinstance(window, int) and window > 0):
            raise ModelError(
                f"model {model_label(model)}: sliding-window layers without a positive integer sliding_window "
                f"({window!r}) are not supported by tokenscope's decode loop"
            )
        windows.append(window)
    return windows


def preallocated_layers(cache: Cache) -> list[PreallocatedLayer]:
    """The layers of a cache made by build_cache: all preallocated."""
    return cast("list[PreallocatedLayer]", cache.layers)


@dataclass
class PrefilledPrompts:
    """The keys and values of one prefill forward, and which cache rows they fill."""

    layers: list[tuple[Tensor, Tensor]]  # per decoder layer: [prompts, heads, width, dim], left padded
    rows: Tensor  # the rows they fill, counted among the rows being filled (the wave's, or the joining ones)
    prompt_of_row: Tensor  # for each of those rows, its prompt in `layers`

    @property
    def width(self) -> int:
        return int(self.layers[0][0].shape[2])


def build_cache(
    groups: list[PrefilledPrompts], n_rows: int, width: int, columns: int, windows: list[int | None]
) -> Cache:
    """Preallocated layers of `n_rows` rows and `columns` columns, every group's prompts written to
    their rows so that each prompt ends at column `width` (left padding before it, masked out);
    layers with a window (see `attention_windows`) hold at most window + window_slack of those
    columns and expose only the ones their window can reach.

    Empties the groups' layers as it goes: each prompt layer is freed once copied, so the prompts'
    keys and values and the cache are never all held at once. Samples of one prompt share its
    keys and values until here: they are copied to each sample's row only inside the cache.
    """
    for group in groups:
        if len(group.layers) != len(windows):
            raise ValueError(f"{len(group.layers)} prompt layers for {len(windows)} attention windows")
    layers: list[Any] = []  # Cache's layer list type is invariant
    for window in windows:
        keys, values = groups[0].layers[0]
        heads = keys.shape[1]
        held = columns if window is None else min(columns, window + window_slack(window))
        layer = PreallocatedLayer(
            keys.new_zeros((n_rows, heads, held, keys.shape[-1])),
            values.new_zeros((n_rows, heads, held, values.shape[-1])),
            width,
            window,
            held_from=0 if window is None else max(0, width - window),
        )
        for group in groups:
            keys, values = group.layers.pop(0)
            layer.write_rows(group.rows, keys[group.prompt_of_row], values[group.prompt_of_row])
            del keys, values
        layers.append(layer)
    return Cache(layers=layers)
