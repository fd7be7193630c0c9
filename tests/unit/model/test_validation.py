"""prepare_model validates what it prepares: a truncated or corrupted safetensors file, or a pickle
that torch's safe loading refuses, is one ModelError naming the model and the file, not a raw
SafetensorError or unpickling traceback later."""

from __future__ import annotations

import json
import os
import struct

import pytest
import torch

from tokenscope.errors import ModelError
from tokenscope.model.sources import ModelSpec, prepare_model

from helpers.tiny_models import save_tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory):
    """The files of a tiny checkpoint, to write (and break) into fresh folders."""
    folder = save_tiny_checkpoint(tmp_path_factory.mktemp("good") / "ckpt")
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def write_checkpoint(folder, files, weights: bytes):
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(weights if name == "model.safetensors" else data)
    return folder


def header_of(weights: bytes) -> tuple[int, dict]:
    (length,) = struct.unpack("<Q", weights[:8])
    return length, json.loads(weights[8 : 8 + length])


def with_header(weights: bytes, header: dict) -> bytes:
    length, _ = header_of(weights)
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + weights[8 + length :]


def corruptions(weights: bytes) -> dict[str, tuple[bytes, str]]:
    length, header = header_of(weights)
    name = next(k for k in header if k != "__metadata__")
    past_end = {**header, name: {**header[name], "data_offsets": [0, len(weights)]}}
    reversed_offsets = {**header, name: {**header[name], "data_offsets": [8, 4]}}
    return {
        "truncated": (weights[:-100], "file size"),
        "empty": (b"", "shorter than the 8-byte header length"),
        "header_too_long": (struct.pack("<Q", 1 << 40) + weights[8:], "over the format's limit"),
        "header_past_end": (struct.pack("<Q", len(weights)) + weights[8:], "runs past the end of the file"),
        "header_not_json": (weights[:8] + b"\xff" * length + weights[8 + length :], "header is not JSON"),
        "offsets_past_end": (with_header(weights, past_end), "data_offsets"),
        "offsets_reversed": (with_header(weights, reversed_offsets), "data_offsets"),
        "extra_bytes": (weights + b"\0" * 16, "file size"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "truncated",
        "empty",
        "header_too_long",
        "header_past_end",
        "header_not_json",
        "offsets_past_end",
        "offsets_reversed",
        "extra_bytes",
    ],
)
def test_broken_safetensors_are_named(tmp_path, checkpoint_bytes, case):
    weights, expected = corruptions(checkpoint_bytes["model.safetensors"])[case]
    folder = write_checkpoint(tmp_path / "ckpt", checkpoint_bytes, weights)
    with pytest.raises(ModelError) as error:
        prepare_model(ModelSpec("broken", "path", str(folder)), tmp_path / "prepared")
    message = str(error.value)
    assert message.startswith("models.broken: ") and str(folder / "model.safetensors") in message
    assert expected in message and "\n" not in message
    assert not (tmp_path / "prepared" / "manifest.json").exists()


def test_valid_safetensors_still_prepare(tmp_path, checkpoint_bytes):
    folder = write_checkpoint(tmp_path / "ckpt", checkpoint_bytes, checkpoint_bytes["model.safetensors"])
    manifest = prepare_model(ModelSpec("ok", "path", str(folder)), tmp_path / "prepared")
    assert list(manifest["weights"]) == ["model.safetensors"]


class _RunsCode:
    """Unpickling this calls os.getpid: harmless, but refused by torch's weights_only loading."""

    def __reduce__(self):
        return (os.getpid, ())


def test_refused_pickle_is_one_line_naming_the_model(tmp_path, checkpoint_bytes):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for name, data in checkpoint_bytes.items():
        if name != "model.safetensors":
            (folder / name).write_bytes(data)
    torch.save({"model.embed_tokens.weight": _RunsCode()}, folder / "pytorch_model.bin")
    with pytest.raises(ModelError) as error:
        prepare_model(ModelSpec("pickled", "path", str(folder), allow_pickle=True), tmp_path / "prepared")
    message = str(error.value)
    assert message.startswith("models.pickled: ") and "pytorch_model.bin" in message
    assert "refused" in message and "\n" not in message
