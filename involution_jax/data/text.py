"""Text for language models: byte tokens, contiguous splits, windows of a context.

* "pydoc" (the default, offline): the interpreter's own documentation,
  `pydoc_data.topics` (English reference prose under the PSF licence, in every
  CPython; its size and SHA-256 differ between Python versions and are recorded).
* "textfile": any UTF-8 file, or a folder of them (read in sorted order), `data_dir`.

Tokens are bytes (vocabulary 256). Splits are contiguous: the first 90% trains, the
next 5% validates, the last 5% tests. Training draws a random window of `context` + 1
tokens per example (any start); evaluation reads every window once, consecutive and
non-overlapping, the last one padded (mask 0 where there is no target).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
from pydoc_data.topics import topics as pydoc_topics

import numpy as np

from involution_jax.data.pipeline import Dataset

VOCAB_SIZE = 256
SPLITS = {"train": (0.0, 0.9), "validation": (0.9, 0.95), "test": (0.95, 1.0)}
TEXT_DATASETS = ("pydoc", "textfile")


def pydoc_text() -> str:
  """The interpreter's documentation topics, in sorted topic order."""
  return "\n\n".join(pydoc_topics[name] for name in sorted(pydoc_topics))


def _read_regular_file(name: str) -> bytes:
  """The bytes of `name` as it is now (its size when opened, however it grows); a
  ValueError for what is not a regular file (a FIFO would block, /dev/zero never ends)."""
  with open(name, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK)) as f:
    status = os.fstat(f.fileno())
    if not stat.S_ISREG(status.st_mode):
      raise ValueError(f"{name} is not a regular file (a FIFO, device or socket): not text data")
    return f.read(status.st_size)


def read_text(path: str) -> str:
  """A UTF-8 file, or every file of a folder (recursively, sorted), joined by blank lines."""
  if os.path.isdir(path):
    files = sorted(
      os.path.join(root, name)
      for root, _, names in os.walk(path)
      for name in names
      if not name.startswith(".")
    )
  elif os.path.exists(path):
    files = [path]
  else:
    raise FileNotFoundError(f"text file or folder not found: {path}")
  parts = []
  for name in files:
    try:
      parts.append(_read_regular_file(name).decode("utf-8"))
    except UnicodeDecodeError as e:
      raise ValueError(f"{name} is not UTF-8 text ({e.reason} at byte {e.start})") from None
  return "\n\n".join(parts)


def encode(text: str) -> np.ndarray:
  """Text -> byte tokens (uint8, one per UTF-8 byte)."""
  return np.frombuffer(text.encode("utf-8"), np.uint8)


def decode(tokens) -> str:
  """Byte tokens -> text (a multi-byte character cut in two shows as U+FFFD)."""
  return bytes(np.asarray(tokens, np.uint8).tolist()).decode("utf-8", errors="replace")


def corpus_info(tokens: np.ndarray, name: str) -> dict:
  """What text this is, exactly: {name, bytes, sha256}."""
  sha256 = hashlib.sha256(tokens.tobytes()).hexdigest()
  return dict(name=name, bytes=int(tokens.size), sha256=sha256)


@dataclasses.dataclass(frozen=True)
class RandomWindows:
  """Training source: record i is the window of `context` + 1 tokens starting at i."""

  tokens: np.ndarray
  context: int
  corpus: dict

  def __len__(self) -> int:
    return self.tokens.size - self.context

  def __getitem__(self, i: int) -> dict:
    return {"tokens": self.tokens[i : i + self.context + 1], "length": self.context}


@dataclasses.dataclass(frozen=True)
class EveryWindow:
  """Evaluation source: consecutive windows, each target predicted once; the last one
  padded (`length` real targets)."""

  tokens: np.ndarray
  context: int
  corpus: dict

  def __len__(self) -> int:
    return -(-(self.tokens.size - 1) // self.context)

  def __getitem__(self, i: int) -> dict:
    start = i * self.context
    window = self.tokens[start : start + self.context + 1]
    return {"tokens": window, "length": window.size - 1}


def load_text_dataset(name: str, split: str, *, context: int, data_dir: str | None) -> Dataset:
  """A split of text `name` ("pydoc", "textfile") as windows of `context` byte tokens."""
  if name not in TEXT_DATASETS:
    raise ValueError(f"unknown text dataset {name!r}; expected one of {TEXT_DATASETS}")
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLITS)}")
  if context < 1:
    raise ValueError(f"context must be >= 1, got {context}")
  if name == "textfile":
    if not data_dir:
      raise ValueError("dataset 'textfile' needs data_dir: a UTF-8 file or a folder of them")
    tokens = encode(read_text(data_dir))
  else:
    tokens = encode(pydoc_text())
  if tokens.size == 0:
    raise ValueError(f"the text of {name} ({data_dir or 'pydoc_data.topics'}) is empty")
  corpus = corpus_info(tokens, name if name == "pydoc" else os.path.abspath(data_dir))
  low, high = (round(f * tokens.size) for f in SPLITS[split])
  part = tokens[low:high]
  if part.size <= context + 1:
    raise ValueError(
      f"context {context} does not fit the {part.size}-token {split} split of {name} "
      f"({tokens.size} tokens in all): use a smaller context or more text"
    )
  source = (RandomWindows if split == "train" else EveryWindow)(part, context, corpus)
  return Dataset(source, VOCAB_SIZE, ())


@dataclasses.dataclass(frozen=True)
class TokenPreprocess:
  """A window -> {"tokens" (T,) int32 inputs, "targets" (T,), "mask" (T,) 1 where a
  target is real, "valid"}, T = `context`."""

  context: int

  def _example(self, record: dict) -> dict:
    window = np.zeros(self.context + 1, np.int32)
    window[: len(record["tokens"])] = record["tokens"]
    mask = (np.arange(self.context) < record["length"]).astype(np.float32)
    return dict(tokens=window[:-1], targets=window[1:], mask=mask, valid=np.float32(1))

  def train(self, record: dict, rng: np.random.Generator) -> dict:
    return self._example(record)

  def eval(self, record: dict) -> dict:
    return self._example(record)

  def blank(self) -> dict:
    return dict(self._example({"tokens": np.zeros(0, np.int32), "length": 0}), valid=np.float32(0))
