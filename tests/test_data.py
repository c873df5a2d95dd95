"""Data sources and grain pipelines: determinism, resume, sharding, bad input."""

import logging
import os
import shutil
import subprocess
import sys
import time

import chex
import numpy as np
import pytest
from helpers import (
  ROOT,
  alive,
  child_processes,
  python_env,
  shared_memory_of,
  spawned_processes,
)
from PIL import Image

from involution_jax.data import classification, pipeline

PREPROCESS = classification.Preprocess(8, (127.5,) * 3, (127.5,) * 3, augment="translate", pad=1)


@pytest.fixture(scope="module")
def digits_train():
  return classification.load_dataset("digits", "train", image_size=8)


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_digits_split_is_fixed_and_disjoint():
  train = classification.load_dataset("digits", "train", image_size=8)
  test = classification.load_dataset("digits", "test", image_size=8)
  assert (len(train.source), len(test.source), train.num_classes) == (1437, 360, 10)
  record = train.source[0]
  chex.assert_shape(record["image"], (8, 8, 3))
  assert record["image"].dtype == np.uint8
  train_images = {train.source[i]["image"].tobytes() for i in range(len(train.source))}
  overlap = sum(test.source[i]["image"].tobytes() in train_images for i in range(360))
  assert overlap < 5  # a few digits are pixel-identical after downsampling
  again = classification.load_dataset("digits", "test", image_size=8)
  np.testing.assert_array_equal(again.source.images, test.source.images)


def test_train_stream_is_deterministic_and_resumes_exactly(digits_train):
  make = lambda: pipeline.train_iterator(digits_train, PREPROCESS, global_batch=32, seed=3)
  first = _take(make(), 5)
  second = _take(make(), 5)
  for a, b in zip(first, second):
    chex.assert_trees_all_equal(a, b)
  iterator = make()
  _take(iterator, 3)
  state = iterator.get_state()
  expected = _take(iterator, 2)
  resumed = make()
  resumed.set_state(state)
  for a, b in zip(_take(resumed, 2), expected):
    chex.assert_trees_all_equal(a, b)
  other_seed = next(pipeline.train_iterator(digits_train, PREPROCESS, global_batch=32, seed=4))
  assert not np.array_equal(other_seed["label"], first[0]["label"])


def test_batches_have_shapes_dtypes_and_cover_an_epoch(digits_train):
  iterator = pipeline.train_iterator(digits_train, PREPROCESS, global_batch=479, seed=0)
  batches = _take(iterator, 3)  # exactly one epoch of 1437
  chex.assert_shape(batches[0]["image"], (479, 8, 8, 3))
  chex.assert_type(
    [batches[0]["image"], batches[0]["label"], batches[0]["valid"]],
    [np.float32, np.int32, np.float32],
  )
  labels = np.concatenate([b["label"] for b in batches])
  np.testing.assert_array_equal(np.bincount(labels), np.bincount(digits_train.source.labels))


def test_processes_read_slices_of_the_same_global_batches(digits_train):
  whole = _take(pipeline.train_iterator(digits_train, PREPROCESS, global_batch=32, seed=1), 3)
  parts = [
    _take(
      pipeline.train_iterator(
        digits_train, PREPROCESS, global_batch=32, seed=1, process_index=p, process_count=4
      ),
      3,
    )
    for p in range(4)
  ]
  for step in range(3):
    for key in ("image", "label"):
      np.testing.assert_array_equal(np.concatenate([p[step][key] for p in parts]), whole[step][key])


def test_eval_batches_pad_and_keep_order():
  test = classification.load_dataset("digits", "test", image_size=8)
  batches = list(pipeline.eval_batches(test, PREPROCESS, global_batch=100))
  assert len(batches) == pipeline.num_eval_batches(test, 100) == 4
  valid = np.concatenate([b["valid"] for b in batches])
  np.testing.assert_array_equal(valid, np.r_[np.ones(360), np.zeros(40)])
  labels = np.concatenate([b["label"] for b in batches])[:360]
  np.testing.assert_array_equal(labels, test.source.labels)
  halves = [
    list(
      pipeline.eval_batches(test, PREPROCESS, global_batch=100, process_index=p, process_count=2)
    )
    for p in range(2)
  ]
  np.testing.assert_array_equal(
    np.concatenate(
      [np.concatenate([halves[0][i]["label"], halves[1][i]["label"]]) for i in range(4)]
    )[:360],
    test.source.labels,
  )


def test_preprocessing_geometry_and_normalisation():
  image = np.zeros((40, 60, 3), np.uint8)
  image[:, 30:] = 255
  record = {"image": image, "label": 1}
  inception = classification.Preprocess(
    16, (0.0,) * 3, (255.0,) * 3, augment="inception", eval_crop=0.5
  )
  out = inception.train(record, np.random.default_rng(0))
  chex.assert_shape(out["image"], (16, 16, 3))
  assert out["image"].min() >= 0 and out["image"].max() <= 1
  centre = inception.eval(record)["image"]  # short side 40 -> 32, centre 16 x 16
  np.testing.assert_allclose(centre[:, :7], 0, atol=0.05)
  np.testing.assert_allclose(centre[:, 10:], 1, atol=0.05)
  gray = {"image": np.full((5, 5, 1), 255, np.uint8), "label": 0}
  np.testing.assert_allclose(PREPROCESS.eval(gray)["image"], 1.0)


def _write_folder(root, corrupt=True):
  rng = np.random.default_rng(0)
  for split, n in (("train", 8), ("val", 3)):
    for c in ("cat", "dog"):
      d = root / split / c
      d.mkdir(parents=True)
      for i in range(n):
        pixels = rng.integers(0, 255, (12, 10, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(d / f"{i}.png")
  if corrupt:
    (root / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
  (root / "train" / "cat" / "notes.txt").write_text("not an image, not listed")


def test_image_folder_skips_and_logs_corrupt_images(tmp_path, caplog):
  _write_folder(tmp_path)
  train = classification.load_dataset("folder", "train", image_size=8, data_dir=str(tmp_path))
  val = classification.load_dataset("folder", "validation", image_size=8, data_dir=str(tmp_path))
  assert train.class_names == ("cat", "dog") and len(train.source) == 17
  assert len(val.source) == 6
  with caplog.at_level(logging.WARNING):
    batches = list(pipeline.eval_batches(train, PREPROCESS, global_batch=17))
  assert batches[0]["valid"].sum() == 16
  assert any("broken.png" in r.getMessage() for r in caplog.records)


def test_hidden_folders_are_not_classes_and_one_class_is_refused(tmp_path):
  _write_folder(tmp_path)
  for split in ("train", "val"):
    (tmp_path / split / ".ipynb_checkpoints").mkdir()
  train = classification.load_dataset("folder", "train", image_size=8, data_dir=str(tmp_path))
  assert train.class_names == ("cat", "dog")
  for split in ("train", "val"):
    shutil.rmtree(tmp_path / split / "dog")
  with pytest.raises(
    ValueError, match="train has one class folder, 'cat': a classifier needs two$"
  ):
    classification.load_dataset("folder", "train", image_size=8, data_dir=str(tmp_path))


def test_missing_datasets_say_where_they_looked(tmp_path):
  with pytest.raises(FileNotFoundError, match=f"(?s){tmp_path}/nothing/train.*train/<class>"):
    classification.load_dataset("folder", "train", image_size=8, data_dir=str(tmp_path / "nothing"))
  with pytest.raises(ValueError, match="needs config.data_dir"):
    classification.load_dataset("folder", "train", image_size=8)
  with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
    classification.load_dataset("mnist", "train", image_size=8)


def test_a_missing_split_folder_is_named_as_the_split_it_reads(tmp_path):
  _write_folder(tmp_path)  # train/ and val/, no test/
  with pytest.raises(FileNotFoundError) as missing:
    classification.load_dataset("folder", "test", image_size=8, data_dir=str(tmp_path))
  message = str(missing.value)
  assert f"not found: {tmp_path}/test\n" in message
  assert f"{tmp_path}/test/<class>/*.jpg for split 'test'" in message and "/val/" not in message


def test_unprepared_tfds_dataset_says_how_to_prepare_it(tmp_path, tfds):
  with pytest.raises(FileNotFoundError, match="(?s)'imagenet2012'.*not prepared.*tfds build"):
    classification.load_dataset("tfds:imagenet2012", "train", image_size=8, data_dir=str(tmp_path))


def test_tfds_source_through_mock_data(tfds):
  with tfds.testing.mock_data(num_examples=20):
    train = classification.load_dataset("tfds:mnist", "train", image_size=8)
    assert train.num_classes == 10 and len(train.source) == 20
    batch = next(pipeline.train_iterator(train, PREPROCESS, global_batch=10, seed=0))
  chex.assert_shape(batch["image"], (10, 8, 8, 3))
  assert batch["valid"].sum() == 10


def test_worker_processes_give_the_same_stream_and_resume(digits_train):
  make = lambda workers: pipeline.train_iterator(
    digits_train, PREPROCESS, global_batch=32, seed=2, workers=workers
  )
  inline, parallel = make(0), make(2)
  for a, b in zip(_take(inline, 3), _take(parallel, 3)):
    chex.assert_trees_all_equal(a, b)
  state = parallel.get_state()
  resumed = make(2)
  resumed.set_state(state)
  chex.assert_trees_all_equal(next(resumed), next(inline))


_READ_AND_WAIT = """
import time
from involution_jax.data import classification, pipeline

if __name__ == "__main__":  # reader processes are spawned: they import this file
  dataset = classification.load_dataset("digits", "train", image_size=8)
  preprocess = classification.Preprocess(8, (0,) * 3, (1,) * 3)
  iterator = pipeline.train_iterator(dataset, preprocess, global_batch=32, seed=2, workers=2)
  next(iterator)
  print("reading", flush=True)
  time.sleep(120)
"""


def alive_after(pids, seconds: float) -> set[int]:
  """Those of `pids` still alive after waiting up to `seconds` for all to end."""
  deadline = time.time() + seconds
  while alive(pids) and time.time() < deadline:
    time.sleep(0.1)
  return alive(pids)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_reader_processes_exit_with_a_killed_parent_and_free_their_shared_memory(tmp_path):
  """SIGKILL (the OOM killer, a scheduler) leaves no time to stop the readers: they
  notice their parent is gone and exit, and the shared batches are unlinked."""
  script = tmp_path / "read.py"
  script.write_text(_READ_AND_WAIT)
  parent = subprocess.Popen(
    [sys.executable, str(script)], env=python_env(), cwd=ROOT, stdout=subprocess.PIPE, text=True
  )
  try:
    assert parent.stdout.readline().strip() == "reading"
    helpers = child_processes(parent.pid)  # the readers, multiprocessing's tracker
    shared = shared_memory_of(helpers | {parent.pid})
    assert len(spawned_processes(parent.pid)) == 2 and shared, (helpers, shared)
  finally:
    parent.kill()
    parent.wait()
  assert not alive_after(helpers, seconds=10)
  assert not {f for f in shared if os.path.exists(f)}
