"""Calibration data: text from a file, folder, `datasets` dataset or the built-in text -> token windows.

`--data` accepts:
  (nothing)          the small built-in text shipped with the package
  path.txt           plain text
  path.jsonl/.json   records with a "text" field (or a JSON list of strings)
  path.parquet       a "text" column
  folder             a saved `datasets` folder (save_to_disk), else every .txt/.jsonl/.json/.parquet in it
  wikitext2          WikiText-2 raw test split joined by "\\n\\n" (the reference's protocol)
  c4                 C4 en validation shard 0, documents sampled as the reference does
  NAME[:CONFIG][@SPLIT]  any Hugging Face dataset with a "text" column (needs network or a local cache)
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..runs.errors import UserError, warn
from ..runs.runfolder import tensor_sha256

if TYPE_CHECKING:  # the --data checks read files before torch loads; the windows import it
    import torch

TEXT_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class Calibration:
    """Token windows [samples, seq_len] and how they were made (recorded in every output)."""

    input_ids: torch.Tensor
    spec: str
    seed: int
    sampling: str

    def describe(self) -> dict:
        return {
            "spec": self.spec,
            "samples": int(self.input_ids.shape[0]),
            "seq_len": int(self.input_ids.shape[1]),
            "tokens": int(self.input_ids.numel()),
            "sha256": tensor_sha256(self.input_ids),
            "seed": self.seed,
            "sampling": self.sampling,
        }


CONTROL_BYTES = [*range(1, 9), 11, *range(14, 27), *range(28, 32), 127]  # not tab, newline, CR, form feed, ESC


def read_text_file(path: Path) -> str:
    """A data file's UTF-8 text; binary files and other encodings are refused in one line."""
    data = path.read_bytes()
    if b"\x00" in data:
        raise UserError(f"{path} is not a text file (it holds NUL bytes: binary or UTF-16); pass UTF-8 text.")
    controls = sum(data.count(bytes([c])) for c in CONTROL_BYTES)
    if controls > max(8, len(data) // 100):  # text in any encoding has (almost) none: no iconv advice for binaries
        raise UserError(f"{path} is not a text file ({controls} control bytes: binary data); pass UTF-8 text.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); convert it, "
                        f"e.g. iconv -f latin1 -t utf-8 {path} > {path.stem}-utf8{path.suffix}") from None  # fmt: skip


def _strings(values: list, path: str) -> list[str]:
    """`values` when they are all strings; otherwise a one-line error naming the first that is not."""
    bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
    if bad is not None:
        found = f"{type(values[bad]).__name__} {str(values[bad])[:40]!r}"
        raise UserError(f"{path}: record {bad} has no string text ({found}); every record needs a 'text' field "
                        "(a string) or be a string.")
    return values


def _read_parquet(path: Path) -> list[str]:
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except (ValueError, OSError, NotImplementedError) as e:
        raise UserError(f"{path} is not a readable parquet file ({str(e).splitlines()[0]}); re-create it.") from None
    if "text" not in frame.columns:
        raise UserError(f"{path} has no 'text' column (columns: {list(frame.columns)}); add one.")
    return _strings(list(frame["text"]), str(path))


def _read_file(path: Path) -> list[str]:
    if path.suffix == ".txt":
        return [read_text_file(path)]
    if path.suffix == ".parquet":
        return _read_parquet(path)
    text = read_text_file(path)
    try:
        lines = text.splitlines() if path.suffix == ".jsonl" else None
        records = [json.loads(x) for x in lines if x.strip()] if lines is not None else json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e.msg}, line {e.lineno}); fix or convert it.")
    if isinstance(records, dict):
        records = records.get("text", records.get("data", []))
    if isinstance(records, str):  # {"text": "one document"}
        records = [records]
    if not isinstance(records, list):
        raise UserError(f"{path} holds a JSON {type(records).__name__}, not records; use a list of strings or of "
                        '{"text": ...} objects, or JSON lines.')  # fmt: skip
    texts = [r if isinstance(r, str) else r.get("text") if isinstance(r, dict) else None for r in records]
    return _strings(texts, str(path))


def _read_folder(path: Path) -> list[str]:
    if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
        from datasets import DatasetDict, load_from_disk

        try:
            ds = load_from_disk(str(path))
        except (OSError, ValueError, KeyError, TypeError) as e:
            why = f"{type(e).__name__}: {str(e).splitlines()[0][:120]}" if str(e) else type(e).__name__
            raise UserError(f"{path} is a damaged saved dataset ({why}); save it again with save_to_disk.") from None
        if isinstance(ds, DatasetDict):
            ds = ds["test"] if "test" in ds else next(iter(ds.values()))
        return _texts_of(ds, str(path))
    files = sorted(p for p in path.rglob("*") if p.suffix in TEXT_SUFFIXES and p.is_file())
    if not files:
        raise UserError(f"{path} has no .txt/.jsonl/.json/.parquet files and is not a saved dataset.")
    return [t for f in files for t in _read_file(f)]


def _texts_of(ds, name: str) -> list[str]:
    if "text" not in ds.column_names:
        raise UserError(f"dataset {name} has no 'text' column (columns: {ds.column_names}).")
    return _strings(list(ds["text"]), name)


def _load_hub(spec: str) -> tuple[list[str], str]:
    """Hub datasets; returns (texts, joiner). Network or a local HF cache required."""
    try:
        from datasets import load_dataset
    except ImportError:
        raise UserError("reading hub datasets needs `datasets`: pip install 'superexperts[data]'.")
    try:
        if spec == "wikitext2":
            return _texts_of(load_dataset("wikitext", "wikitext-2-raw-v1", split="test"), spec), "\n\n"
        if spec == "c4":
            shard = "en/c4-validation.00000-of-00008.json.gz"
            return _texts_of(load_dataset("allenai/c4", data_files={"validation": shard}, split="validation"), spec), ""
        name, _, split = spec.partition("@")
        name, _, config = name.partition(":")
        return _texts_of(load_dataset(name, config or None, split=split or "test"), spec), "\n\n"
    except (OSError, ValueError, ConnectionError) as e:
        raise UserError(
            f"could not load dataset '{spec}' ({type(e).__name__}); without network pass a local file or a "
            "folder saved with datasets' save_to_disk."
        )


def load_texts(spec: str | None, flag: str = "--data") -> tuple[list[str], str]:
    """(documents, joiner) for a data spec; joiner "" means documents are sampled separately (C4).
    `flag` names the option in errors (--data, --ppl)."""
    if spec is None:
        from ..models.demo import builtin_text

        return [builtin_text()], "\n\n"
    path = Path(spec)
    if path.is_dir():
        return _read_folder(path), "\n\n"
    if path.is_file():
        if path.suffix not in TEXT_SUFFIXES:
            raise UserError(f"{flag} {spec}: unsupported file type; use {', '.join(TEXT_SUFFIXES)}.")
        return _read_file(path), "\n\n"
    if path.exists():  # `--data <(cat file)`: a pipe, and the data is read more than once
        raise UserError(f"{flag} {spec} is a pipe or device, not a file; save the text to a file and pass that.")
    looks_like_path = spec.startswith((".", "/", "~")) or spec.count("/") > 1 or path.suffix in TEXT_SUFFIXES
    if looks_like_path:
        raise UserError(f"{flag} {spec}: no such file or folder.")
    return _load_hub(spec)


def is_local_spec(spec: str | None) -> bool:
    """A data spec read from this machine (a file or folder, or a path that should be one), not a hub name."""
    if spec is None:
        return False
    path = Path(spec)
    return path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1 or path.suffix in TEXT_SUFFIXES


def check_texts(spec: str | None, flag: str = "--data") -> None:
    """Every problem of a local data file or folder (missing, empty, not text, no text field), before
    any model is loaded. Hub datasets are read when used (a download is not repeated for a check)."""
    if not is_local_spec(spec):
        return
    docs, _ = load_texts(spec, flag)
    if not any(d.strip() for d in docs):
        raise UserError(f"{flag} {spec} is empty; pass a file with text.")


def _prepend_bos(tokenizer) -> bool:
    """Windows start with BOS when the tokenizer itself adds one (Llama, Mixtral, DeepSeek, the demo)."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a").input_ids[:1] == [bos]


def cut_windows(stream: torch.Tensor, length: int, max_windows: int | None = None) -> torch.Tensor:
    """(windows, length): consecutive non-overlapping windows of a 1-D token stream, tail dropped.
    The one window cutter of calibration and perplexity."""
    count = stream.numel() // length
    if count == 0:
        raise UserError(f"the data has {stream.numel()} tokens, fewer than one window of {length}; "
                        "lower --seq-len or pass more data.")
    if max_windows is not None:
        count = min(count, max_windows)
    return stream[: count * length].view(count, length)


def _stream_windows(ids: torch.Tensor, seq_len: int, samples: int | None, seed: int, bos: int | None) -> torch.Tensor:
    """Calibration windows: a seeded subset of the stream's windows, each led by BOS when the tokenizer adds one."""
    windows = cut_windows(ids, seq_len - (bos is not None))
    if samples is not None and samples < len(windows):
        windows = windows[sorted(random.Random(seed).sample(range(len(windows)), samples))]
    if bos is not None:
        import torch

        windows = torch.cat([torch.full((len(windows), 1), bos, dtype=windows.dtype), windows], dim=1)
    return windows


def _document_windows(docs: list[str], tokenizer, seq_len: int, samples: int, seed: int) -> torch.Tensor:
    """The reference's C4 sampling: random documents longer than seq_len, a random window in each."""
    rng = random.Random(seed)
    out = []
    for _ in range(samples):
        for _attempt in range(10_000):
            ids = tokenizer(docs[rng.randint(0, len(docs) - 1)], return_tensors="pt").input_ids[0]
            if ids.numel() > seq_len:
                break
        else:
            raise UserError(f"no document is longer than --seq-len {seq_len}; lower it.")
        start = rng.randint(0, ids.numel() - seq_len - 1)
        out.append(ids[start : start + seq_len])
    import torch

    return torch.stack(out)


def check_window_args(seq_len: int, samples: int | None, batch_size: int = 1) -> None:
    """Validate window arguments before anything is loaded."""
    if seq_len < 2:
        raise UserError(f"--seq-len must be >= 2 (attention sinks need a first token and others), got {seq_len}.")
    if samples is not None and samples < 1:
        raise UserError(f"--samples must be >= 1, got {samples}.")
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {batch_size}.")


def calibration(spec: str | None, tokenizer, *, seq_len: int, samples: int | None, seed: int = 0) -> Calibration:
    """Token windows for profiling.

    >>> calib = calibration("wiki.txt", tokenizer, seq_len=2048, samples=128, seed=0)
    >>> calib.input_ids.shape
    torch.Size([128, 2048])
    """
    check_window_args(seq_len, samples)
    docs, joiner = load_texts(spec)
    name = spec or "builtin"
    if not any(d.strip() for d in docs):
        raise UserError(f"--data {name} is empty; pass a file with text.")
    if joiner == "":  # C4-style per-document sampling
        ids = _document_windows(docs, tokenizer, seq_len, samples or 128, seed)
        return Calibration(ids, name, seed, "random window in random document (reference C4 protocol)")
    stream = tokenizer(joiner.join(docs), add_special_tokens=False, return_tensors="pt").input_ids[0]
    bos = tokenizer.bos_token_id if _prepend_bos(tokenizer) else None
    ids = _stream_windows(stream, seq_len, samples, seed, bos)
    if samples is not None and ids.shape[0] < samples:  # the data has fewer windows than asked for
        warn(f"--samples {samples}: the data holds only {ids.shape[0]} window(s) of --seq-len {seq_len}; "
             f"using {ids.shape[0]}. Pass more --data or a lower --seq-len for more.")  # fmt: skip
    how = "non-overlapping windows" + (", seeded random subset" if samples else "") + (", BOS first" if bos else "")
    return Calibration(ids, name, seed, how)
