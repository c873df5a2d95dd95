"""Grain pipelines: records of a split's source -> fixed-shape local batches.

Batches are {"image": float32 (b, ...), ..., "valid": float32 (b,)}; `valid`
is 0 for padding (the last evaluation batch) and for examples that could not
be read. A preprocessing object (`classification.Preprocess`,
`dense.DensePreprocess`) supplies `train(record, rng)`, `eval(record)` and
`blank()`.

Multi-process: the global batch is cut into `process_count` consecutive
slices and process p reads slice p of every global batch, so N processes see
exactly the batches one process would (same shuffle, same augmentation).
"""

from __future__ import annotations

import dataclasses
import gc
import math
import multiprocessing
import os
import threading
from typing import Any, Protocol

import grain
import numpy as np
from absl import flags
from grain._src.python.ipc import shared_memory_array


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A split's source with what the model needs to know about it."""

  source: Any
  num_classes: int
  class_names: tuple[str, ...]


class Preprocessor(Protocol):
  """Record -> fixed-shape example; picklable for grain's worker processes."""

  def train(self, record: dict, rng: np.random.Generator) -> dict: ...

  def eval(self, record: dict) -> dict: ...

  def blank(self) -> dict:
    """A padding example of the evaluation shape, valid = 0."""
    ...


def _local_slices(
  dataset: grain.MapDataset, global_batch: int, process_index: int, process_count: int
) -> grain.MapDataset:
  """Process `process_index`'s slice of every global batch, as local batches."""
  if global_batch % process_count:
    raise ValueError(f"global batch {global_batch} is not divisible by {process_count} processes")
  local = global_batch // process_count
  return dataset.batch(local, drop_remainder=True)[process_index::process_count]


@dataclasses.dataclass(frozen=True)
class _Indexed:
  """A source whose items are (position, record)."""

  source: Any

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i: int) -> tuple[int, Any]:
    return int(i), self.source[i]


@dataclasses.dataclass(frozen=True)
class _TrainExample:
  """(position, record) -> the augmented example with its "index" (picklable)."""

  preprocess: Any

  def __call__(self, indexed: tuple[int, Any], rng: np.random.Generator) -> dict:
    index, record = indexed
    return dict(self.preprocess.train(record, rng), index=np.int64(index))


def train_iterator(
  dataset: Dataset,
  preprocess: Preprocessor,
  *,
  global_batch: int,
  seed: int,
  process_index: int = 0,
  process_count: int = 1,
  workers: int = 0,
  read_ahead: int = 2,
) -> grain.DatasetIterator:
  """Endless shuffled, augmented local batches; checkpointable (`get_state`).

  Besides the preprocessed fields, a batch has "index" (int64 (b,)): each
  example's position in the source, for host-side bookkeeping (which files
  could not be read); it is not meant for the device.

  Epochs reshuffle (seeded by `seed` and the epoch); augmentation randomness is
  seeded by `seed` and the example's position, so the stream is deterministic.
  At most `read_ahead` batches (>= 1) are prepared ahead of the one consumed,
  by as many threads, in each of `workers` processes (or in this one): host
  memory stays `(1 + read_ahead) * max(workers, 1)` local batches, plus one
  per worker in flight to this process.
  """
  if read_ahead < 1:
    raise ValueError(f"read_ahead must be >= 1 batch, got {read_ahead}")
  if len(dataset.source) < global_batch:
    raise ValueError(
      f"batch_size {global_batch} exceeds the {len(dataset.source)} training examples"
    )
  ds = grain.MapDataset.source(_Indexed(dataset.source)).seed(seed).shuffle().repeat(None)
  ds = ds.random_map(_TrainExample(preprocess))
  # grain's default reads 500 elements (here: batches) ahead on 16 threads.
  bounded = grain.ReadOptions(num_threads=read_ahead, prefetch_buffer_size=read_ahead)
  ds = _local_slices(ds, global_batch, process_index, process_count).to_iter_dataset(bounded)
  if workers > 0:
    if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; outside an absl app
      flags.FLAGS.mark_as_parsed()  # (a library call) take their defaults
    ds = ds.mp_prefetch(
      grain.MultiprocessingOptions(num_workers=workers), worker_init_fn=exit_with_parent
    )
  return iter(ds)


def exit_with_parent(worker: int = 0, workers: int = 1) -> None:
  """Makes this reader process exit as soon as its parent has died.

  A parent killed outright (SIGKILL, the OOM killer) cannot stop its readers; without
  this they would live on with their memory and shared batches. Runs in each reader as
  grain's `worker_init_fn(worker, workers)`.
  """
  parent = multiprocessing.parent_process()  # known from the parent, not from getppid
  if parent is None:  # not started by multiprocessing: nothing to watch
    return

  def watch() -> None:
    parent.join()  # returns when the parent has ended
    os._exit(1)

  threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def close(iterator: grain.DatasetIterator) -> None:
  """Stops a training iterator's workers and frees the shared memory of its batches.

  grain unlinks a batch's shared memory from a background thread once the
  array is collected; waiting for that thread here is what keeps a run with
  `workers` > 0 from leaving shared memory behind (the `resource_tracker`
  warning at exit).
  """
  iterator.close()
  gc.collect()
  deleting = shared_memory_array.SharedMemoryArray._del_thread_pool  # noqa: SLF001
  if deleting is not None:
    deleting.close()
    deleting.join()
    shared_memory_array.SharedMemoryArray._disable_async_del()  # noqa: SLF001


def eval_batches(
  dataset: Dataset,
  preprocess: Preprocessor,
  *,
  global_batch: int,
  process_index: int = 0,
  process_count: int = 1,
) -> grain.MapDataset:
  """Every example once, in order, padded (valid = 0) to whole global batches."""
  n = len(dataset.source)
  padded = math.ceil(n / global_batch) * global_batch
  source = dataset.source

  def example(i: int) -> dict:
    if i < n:
      return preprocess.eval(source[i])
    return preprocess.blank()

  ds = grain.MapDataset.range(padded).map(example)
  return _local_slices(ds, global_batch, process_index, process_count)


def num_eval_batches(dataset: Dataset, global_batch: int) -> int:
  return math.ceil(len(dataset.source) / global_batch)
