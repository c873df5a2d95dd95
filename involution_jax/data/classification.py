"""Classification data: sources (digits, image folders, TFDS) and their preprocessing.

A source is random access (`len`, `[i]`) and yields records
{"image": uint8 (H, W, C)} or {"path": str}, plus {"label": int}.
`Preprocess` turns a record into {"image": float32 (S, S, 3), "label": int32,
"valid": float32}; `valid` is 0 for images that could not be read, which are
logged with their path and left out of losses and metrics. The grain
pipelines that batch them are in `pipeline.py`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from involution_jax.data.images import read_rgb, warn_unreadable
from involution_jax.data.pipeline import Dataset

AUGMENTATIONS = ("none", "inception", "pad_crop_flip", "translate")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


# --- sources --------------------------------------------------------------------


class ArraySource:
  """In-memory images (N, H, W, C) uint8 and labels (N,)."""

  def __init__(self, images: np.ndarray, labels: np.ndarray):
    self.images, self.labels = images, labels

  def __len__(self) -> int:
    return len(self.labels)

  def __getitem__(self, i: int) -> dict:
    return {"image": self.images[i], "label": int(self.labels[i])}


def digits(split: str, image_size: int) -> Dataset:
  """scikit-learn's bundled 8x8 handwritten digits, resized, as RGB.

  1,797 images; a fixed stratified split keeps 360 for "test" (also "validation").
  """
  if split not in ("train", "test", "validation"):
    raise ValueError(f"digits has splits 'train' and 'test', got {split!r}")
  # Here, not at the top: scikit-learn takes ~0.75 s to import, which every command
  # would pay at start-up, and only this dataset uses it.
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split

  data = load_digits()
  images = np.round(data.images * (255 / 16)).astype(np.uint8)
  train_idx, test_idx = train_test_split(
    np.arange(len(images)), test_size=360, random_state=0, stratify=data.target
  )
  idx = train_idx if split == "train" else test_idx
  resized = np.stack(
    [
      np.asarray(Image.fromarray(im).resize((image_size, image_size), Image.BILINEAR))
      for im in images[idx]
    ]
  )
  rgb = np.repeat(resized[..., None], 3, axis=-1)
  return Dataset(ArraySource(rgb, data.target[idx]), 10, tuple(str(i) for i in range(10)))


class FolderSource:
  """`root/<class>/<image>` files; class index = position in sorted class names."""

  def __init__(self, files: Sequence[tuple[str, int]]):
    self.files = list(files)

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, i: int) -> dict:
    path, label = self.files[i]
    return {"path": path, "label": label}


def _class_folders(folder: str) -> list[str]:
  """The sub-folders of `folder`, sorted; hidden ones (".ipynb_checkpoints") are not classes."""
  return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def image_folder(root: str, split: str) -> Dataset:
  """An ImageNet-style folder: `root/train/<class>/*.jpg` and `root/<split>/<class>/*.jpg`
  (split "validation" reads `root/val/` where there is no `root/validation/`).

  Classes are the sub-folders of `root/train` (sorted), for every split.
  """
  split_dir = os.path.join(root, split)
  if split == "validation" and not os.path.isdir(split_dir):
    split_dir = os.path.join(root, "val")  # TFDS's split name, ImageNet's folder name
  train_dir = os.path.join(root, "train")
  how = (
    f"expected an ImageNet-style folder: {train_dir}/<class>/*.jpg (the classes) and "
    f"{split_dir}/<class>/*.jpg for split {split!r} (config.eval_split / train_split name "
    "the folder; docs/data.md); set config.data_dir to the folder above them"
  )
  for d in (train_dir, split_dir):
    if not os.path.isdir(d):
      raise FileNotFoundError(f"dataset folder not found: {d}\n{how}")
  classes = _class_folders(train_dir)
  if not classes:
    raise FileNotFoundError(f"no class folders in {train_dir}\n{how}")
  if len(classes) < 2:
    raise ValueError(f"{train_dir} has one class folder, {classes[0]!r}: a classifier needs two")
  index = {c: i for i, c in enumerate(classes)}
  files = []
  for c in _class_folders(split_dir):
    if c not in index:
      raise ValueError(
        f"class folder {os.path.join(split_dir, c)} has no counterpart in {train_dir}"
      )
    for entry in sorted(os.scandir(os.path.join(split_dir, c)), key=lambda e: e.name):
      if entry.name.lower().endswith(IMAGE_EXTENSIONS):
        files.append((entry.path, index[c]))
  if not files:
    raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {split_dir}\n{how}")
  return Dataset(FolderSource(files), len(classes), tuple(classes))


def tfds_source(name: str, split: str, data_dir: str | None):
  """(random-access source, tfds DatasetInfo) of a TFDS dataset prepared in array_record
  format, read with `tfds.data_source`. Never downloads. Needs the `tfds` extra (no
  TensorFlow needed to read)."""
  try:
    import tensorflow_datasets as tfds
  except ImportError as e:
    raise ImportError(
      "dataset 'tfds:...' needs tensorflow-datasets: pip install "
      "'tensorflow-datasets>=4.9.10' importlib_resources "
      "(or, in the clone: pip install -e '.[tfds]')"
    ) from e
  try:
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    info = tfds.builder(name, data_dir=data_dir).info
  except Exception as e:  # tfds raises several types for "not prepared"
    raise FileNotFoundError(
      f"TFDS dataset {name!r} (split {split!r}) is not prepared in data_dir={data_dir!r} "
      f"(default ~/tensorflow_datasets): {e}\nPrepare it in array_record format, e.g. "
      f"`tfds build {name} --data_dir=DIR --file_format=array_record` on a machine with "
      "TensorFlow, then set config.data_dir=DIR."
    ) from e
  return source, info


def tfds_dataset(name: str, split: str, data_dir: str | None) -> Dataset:
  """An image classification dataset of TFDS (`tfds_source`), with its class names."""
  source, info = tfds_source(name, split, data_dir)
  label = info.features["label"]
  return Dataset(source, label.num_classes, tuple(label.names))


def load_dataset(name: str, split: str, *, image_size: int, data_dir: str | None = None) -> Dataset:
  """`name`: "digits", "folder" (data_dir = the folder) or "tfds:<name>"."""
  if name == "digits":
    return digits(split, image_size)
  if name == "folder":
    if not data_dir:
      raise ValueError("dataset 'folder' needs config.data_dir (the folder with train/ and val/)")
    return image_folder(data_dir, split)
  if name.startswith("tfds:"):
    return tfds_dataset(name[len("tfds:") :], split, data_dir)
  raise ValueError(f"unknown dataset {name!r}; expected 'digits', 'folder' or 'tfds:<name>'")


# --- preprocessing ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """Record -> {"image", "label", "valid"}; picklable for grain's worker processes.

  augment (train only): "inception" (RandomResizedCrop + flip), "pad_crop_flip"
  (CIFAR style, pad 4), "translate" (pad + random crop, no flip: digits),
  "none". Evaluation resizes the short side to image_size / eval_crop and takes
  the central crop (eval_crop=1: resize to image_size).
  """

  image_size: int
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  augment: str = "none"
  eval_crop: float = 1.0
  pad: int = 4

  def _decode(self, record: dict) -> Image.Image | None:
    if "image" in record:
      image = np.asarray(record["image"])
      return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).convert("RGB")
    try:
      return read_rgb(record["path"])
    except Exception as e:  # truncated, corrupt, not an image, unreadable
      warn_unreadable(record["path"], f"{type(e).__name__}: {e}")
      return None

  def blank(self) -> dict:
    """A padding example: zeros, valid = 0."""
    return self._finish(None, 0)

  def _finish(self, image: Image.Image | None, label: int) -> dict:
    if image is None:
      pixels = np.zeros((self.image_size, self.image_size, 3), np.float32)
    else:
      if image.size != (self.image_size, self.image_size):
        image = image.resize((self.image_size, self.image_size), Image.BILINEAR)
      pixels = (np.asarray(image, np.float32) - self.mean) / self.std
    return {
      "image": pixels.astype(np.float32),
      "label": np.int32(label),
      "valid": np.float32(image is not None),
    }

  def eval(self, record: dict) -> dict:
    image = self._decode(record)
    if image is not None and self.eval_crop < 1:
      short = round(self.image_size / self.eval_crop)
      w, h = image.size
      scale = short / min(w, h)
      image = image.resize(
        (max(short, round(w * scale)), max(short, round(h * scale))), Image.BILINEAR
      )
      w, h = image.size
      left, top = (w - self.image_size) // 2, (h - self.image_size) // 2
      image = image.crop((left, top, left + self.image_size, top + self.image_size))
    return self._finish(image, record["label"])

  def train(self, record: dict, rng: np.random.Generator) -> dict:
    image = self._decode(record)
    if image is not None:
      image = getattr(self, f"_{self.augment}")(image, rng)
    return self._finish(image, record["label"])

  def _none(self, image, rng):
    return image

  def _inception(self, image: Image.Image, rng) -> Image.Image:
    w, h = image.size
    for _ in range(10):
      area = w * h * rng.uniform(0.08, 1.0)
      ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
      cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
      if 0 < cw <= w and 0 < ch <= h:
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        break
    else:  # central crop at the closest allowed aspect ratio
      cw, ch = (w, min(h, round(w * 4 / 3))) if w < h else (min(w, round(h * 4 / 3)), h)
      left, top = (w - cw) // 2, (h - ch) // 2
    image = image.resize(
      (self.image_size, self.image_size), Image.BILINEAR, box=(left, top, left + cw, top + ch)
    )
    return self._flip(image, rng)

  def _flip(self, image, rng):
    return image.transpose(Image.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else image

  def _translate(self, image: Image.Image, rng) -> Image.Image:
    if image.size != (self.image_size, self.image_size):
      image = image.resize((self.image_size, self.image_size), Image.BILINEAR)
    padded = Image.new("RGB", (self.image_size + 2 * self.pad,) * 2)
    padded.paste(image, (self.pad, self.pad))
    left, top = (int(v) for v in rng.integers(0, 2 * self.pad + 1, size=2))
    return padded.crop((left, top, left + self.image_size, top + self.image_size))

  def _pad_crop_flip(self, image, rng):
    return self._flip(self._translate(image, rng), rng)
