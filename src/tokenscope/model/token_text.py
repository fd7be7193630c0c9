"""Token strings without per-token Python work in the hot path.

Each token is stored two ways: its raw vocabulary piece (`convert_ids_to_tokens`, e.g. 'Ġthe')
and a readable string from incremental decoding of the sequence (' the'). A character whose
UTF-8 bytes span several tokens is given to the token that completes it, so single byte-level
pieces never show as '�' and concatenating a sequence's readable strings gives its text back.
Both come from per-vocabulary tables built once per tokenizer, then numpy gathers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from tokenscope.model.types import Tokenizer


@lru_cache(maxsize=1)
def _byte_level_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode map: printable stand-in character -> byte."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {chr(code): byte for byte, code in zip(printable, codes, strict=True)}


_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _decoder_kind(tokenizer: Tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return "generic"
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    kinds = {decoder.get("type")} | {d.get("type") for d in decoder.get("decoders", []) if isinstance(d, dict)}
    if "ByteLevel" in kinds:
        return "byte_level"
    if "ByteFallback" in kinds or "Metaspace" in kinds:
        return "metaspace"
    return "generic"


@dataclass
class VocabularyStrings:
    """Per-vocabulary lookup tables of one tokenizer."""

    pieces: pa.StringArray  # raw piece per id
    byte_data: np.ndarray  # uint8, all tokens' bytes concatenated
    byte_offsets: np.ndarray  # int64 [V + 1]

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer) -> VocabularyStrings:
        size = len(tokenizer)
        pieces = [p if p is not None else "" for p in tokenizer.convert_ids_to_tokens(list(range(size)))]
        special = {int(i) for i in getattr(tokenizer, "added_tokens_decoder", {})}
        kind = _decoder_kind(tokenizer)
        byte_map = _byte_level_decoder()
        chunks: list[bytes] = []
        # Built once per tokenizer (not per scored token).
        for token_id, piece in enumerate(pieces):
            if token_id in special:
                chunks.append(piece.encode("utf-8"))
            elif kind == "byte_level" and all(c in byte_map for c in piece):
                chunks.append(bytes(byte_map[c] for c in piece))
            elif kind == "metaspace":
                match = _BYTE_FALLBACK.match(piece)
                chunks.append(bytes([int(match.group(1), 16)]) if match else piece.replace("▁", " ").encode("utf-8"))
            else:
                chunks.append(cast(str, tokenizer.decode([token_id])).encode("utf-8"))
        lengths = np.fromiter((len(c) for c in chunks), dtype=np.int64, count=size)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        data = np.frombuffer(b"".join(chunks), dtype=np.uint8)
        return cls(pieces=pa.array(pieces, type=pa.string()), byte_data=data, byte_offsets=offsets)

    def piece_array(self, ids: np.ndarray) -> pa.Array:
        return pc.take(self.pieces, pa.array(np.asarray(ids, dtype=np.int64)))

    def readable(self, ids: np.ndarray, sequence_starts: np.ndarray) -> pa.StringArray:
        """Readable strings for tokens of several sequences concatenated in `ids`.

        `sequence_starts` holds the index in `ids` where each sequence begins (first is 0).
        """
        ids = np.asarray(ids, dtype=np.int64)
        n = ids.size
        if n == 0:
            return pa.array([], type=pa.string())
        starts = self.byte_offsets[ids]
        lengths = self.byte_offsets[ids + 1] - starts
        token_end = np.cumsum(lengths)
        token_start = token_end - lengths
        total = int(token_end[-1]) if n else 0
        gather = np.repeat(starts - token_start, lengths) + np.arange(total)
        data = self.byte_data[gather]
        # A byte starts a character unless it is a UTF-8 continuation byte; sequences never share one.
        is_start = (data & 0xC0) != 0x80
        seq_first_byte = token_start[np.asarray(sequence_starts, dtype=np.int64)]
        seq_first_byte = seq_first_byte[seq_first_byte < total]
        is_start[seq_first_byte] = True
        positions = np.arange(total)
        char_start = np.maximum.accumulate(np.where(is_start, positions, 0)) if total else positions
        is_end = np.ones(total, dtype=bool)
        is_end[:-1] = is_start[1:]
        char_ends = np.flatnonzero(is_end)
        first = np.searchsorted(char_ends, token_start, side="left")
        last = np.searchsorted(char_ends, token_end, side="left")
        has_chars = last > first
        safe_first = np.minimum(first, max(char_ends.size - 1, 0))
        safe_last = np.maximum(last - 1, 0)
        begin = np.where(has_chars, char_start[char_ends[safe_first]] if total else 0, 0)
        end = np.where(has_chars, char_ends[safe_last] + 1 if total else 0, 0)
        out_lengths = end - begin
        out_offsets = np.concatenate([[0], np.cumsum(out_lengths)]).astype(np.int32)
        out_gather = np.repeat(begin - out_offsets[:-1], out_lengths) + np.arange(int(out_offsets[-1]))
        out_data = data[out_gather]
        array = pa.StringArray.from_buffers(n, pa.py_buffer(out_offsets.tobytes()), pa.py_buffer(out_data.tobytes()))
        try:
            array.validate(full=True)
        except pa.ArrowInvalid:
            # Rare: invalid UTF-8 (a truncated character at the end of a generation). Decode those
            # strings one by one with replacement characters.
            binary = pa.BinaryArray.from_buffers(
                pa.binary(), n, [None, pa.py_buffer(out_offsets.tobytes()), pa.py_buffer(out_data.tobytes())]
            )
            array = pa.array([b.decode("utf-8", errors="replace") for b in binary.to_pylist()], type=pa.string())
        return array
