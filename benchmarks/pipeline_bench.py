"""Training pipeline memory: how far the grain iterator reads ahead, and what it holds.

ImageNet-style preprocessing (JPEG decode, RandomResizedCrop 224, flip) of a
folder of synthetic 320 x 256 JPEGs, batch 8 as in the report that found
grain's default read-ahead (500 batches: 2.5 GiB within 15 s). For each
`read_ahead` (config.prefetch_batches): the records decoded and the resident
memory grown once the readers stop, after one `next()`.

    python benchmarks/pipeline_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time

import numpy as np
from common import print_table, rss_bytes
from PIL import Image

from involution_jax.data import imagenet
from involution_jax.data.classification import Preprocess, image_folder
from involution_jax.data.pipeline import Dataset, close, train_iterator


class _Counting:
  """A source that counts the records read."""

  def __init__(self, source):
    self.source, self.reads, self._lock = source, 0, threading.Lock()

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    with self._lock:
      self.reads += 1
    return self.source[i]


def _folder(root: str, images: int) -> Dataset:
  rng = np.random.default_rng(0)
  for split in ("train", "val"):
    for c in range(2):
      os.makedirs(os.path.join(root, split, f"c{c}"), exist_ok=True)
  for i in range(images):
    pixels = rng.integers(0, 255, (256, 320, 3), np.uint8)
    Image.fromarray(pixels).save(os.path.join(root, "train", f"c{i % 2}", f"{i}.jpg"), quality=90)
  return image_folder(root, "train")


def _measure(dataset: Dataset, read_ahead: int, batch: int, settle_s: float) -> tuple:
  source = _Counting(dataset.source)
  preprocess = Preprocess(224, imagenet.MEAN, imagenet.STD, augment="inception")
  before = rss_bytes()
  iterator = train_iterator(
    Dataset(source, dataset.num_classes, dataset.class_names),
    preprocess,
    global_batch=batch,
    seed=0,
    read_ahead=read_ahead,
  )
  next(iterator)
  time.sleep(settle_s)  # the readers run as far ahead as they may
  grown = rss_bytes() - before
  reads = source.reads
  close(iterator)
  return reads, grown


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="fewer images and settings")
  args = parser.parse_args(argv)
  batch, images = 8, 96 if args.quick else 400
  settings = (1, 2) if args.quick else (1, 2, 4, 16)
  batch_mib = batch * 224 * 224 * 3 * 4 / 2**20
  rows = []
  with tempfile.TemporaryDirectory() as root:
    dataset = _folder(root, images)
    for read_ahead in settings:
      reads, grown = _measure(dataset, read_ahead, batch, 1.0 if args.quick else 5.0)
      rows.append(
        [
          str(read_ahead),
          str(reads),
          f"{reads / batch:.0f}",
          str(1 + read_ahead),
          f"{grown / 2**20:.0f}",
          f"{(1 + read_ahead) * batch_mib:.0f}",
        ]
      )
  print(f"batch {batch} at 224 x 224 x 3 float32 = {batch_mib:.1f} MiB; {images} JPEGs 320 x 256")
  print_table(
    [
      "read_ahead",
      "records decoded",
      "batches",
      "bound (1 + read_ahead)",
      "RSS growth MiB",
      "bound x batch MiB",
    ],
    rows,
  )


if __name__ == "__main__":
  main()
