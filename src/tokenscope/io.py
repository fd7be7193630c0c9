"""Atomic file writing: a crashed or interrupted job never leaves a file that looks complete."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from tokenscope.errors import ResultFileError


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(path: str | Path, writer: Callable[[Path], Any]) -> None:
    """Call `writer(tmp_path)` and move the result to `path` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def write_parquet(table: pa.Table, path: str | Path) -> None:
    write_atomic(path, lambda tmp: pq.write_table(table, tmp, compression="zstd"))


def write_parquet_stream(tables: Iterable[pa.Table | pa.RecordBatch], path: str | Path, schema: pa.Schema) -> int:
    """Write `tables` (each a row group) one after another into one parquet file of `schema`,
    atomically; returns the rows written. Memory holds one table at a time, never the file's rows:
    scoring at research scale produces tables too large to build whole."""
    rows = 0
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for table in tables:
            if isinstance(table, pa.RecordBatch):
                writer.write_batch(table)
            else:
                writer.write_table(table)
            rows += table.num_rows
    return rows


def gather_parquet(
    inputs: Iterable[str | Path],
    output: str | Path,
    batch_rows: int = 65_536,
    transform: Callable[[pa.RecordBatch], pa.RecordBatch] | None = None,
) -> int:
    """Concatenate parquet files of one schema (metadata included) into `output`, atomically.

    Streams record batches of at most `batch_rows` rows from each input in turn into one writer
    (each batch becomes a row group of the output), so memory holds one batch, never a table;
    `transform` (a RecordBatch -> RecordBatch of the same schema) rewrites each batch on the way.
    A file whose schema differs from the first's (written by an older version) is a ResultFileError
    naming both files. Returns the rows written.
    """
    files = [str(path) for path in inputs]
    if not files:
        raise ValueError(f"no shard files to gather into {output}")
    schema = pq.read_schema(files[0])

    def batches() -> Iterator[pa.RecordBatch]:
        for path in files:
            source = pq.ParquetFile(path)
            if not source.schema_arrow.equals(schema, check_metadata=True):
                raise ResultFileError(
                    f"{path}: schema differs from {files[0]}'s; rerun the shard job that wrote it (delete the file)"
                )
            for batch in source.iter_batches(batch_size=batch_rows):
                yield batch if transform is None else transform(batch)

    return write_parquet_stream(batches(), output, schema)


def write_text(text: str, path: str | Path) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(obj: Any, path: str | Path) -> None:
    write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)


def safe_file_name(text: object) -> str:
    """`text` as a file name (of a prompt id's page or figure): one name per text, readable.

    A text of letters, digits and ._- only is its own name (`math01` -> `math01`). Any other
    character is replaced by '_' and '~' plus the first 8 hex digits of the text's sha256 are
    appended, so texts that differ only there keep distinct files (`a/b` -> `a_b~<hash>`, while
    `a_b` stays `a_b`); '~' appears in no unescaped name. File systems that ignore case (macOS,
    Windows) still map `A` and `a` to one file.
    """
    text = str(text)
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in text)
    if safe == text:
        return text
    return f"{safe}~{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
