"""Data for dense prediction: digit scenes (offline), Cityscapes, COCO; preprocessing.

Records: {"image": uint8 (H, W, 3)} or {"path": str}, plus for segmentation
{"mask": uint8 (H, W)} or {"mask_path": str} (class per pixel, 255 = ignore),
for detection {"boxes": float32 (G, 4) x1 y1 x2 y2, "classes": int32 (G,),
-1 = padding} and, for instance segmentation, {"instance_masks": uint8 (G, H, W)}
(or COCO's "segmentations"; COCO itself is in `coco`). `DensePreprocess` turns
them into fixed-shape examples that go through the same grain pipelines
(`pipeline.train_iterator`, `pipeline.eval_batches`) as classification.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from PIL import Image

from involution_jax.data import coco
from involution_jax.data.classification import digits
from involution_jax.data.images import read_rgb, warn_unreadable
from involution_jax.data.pipeline import Dataset

IGNORE = 255
# What a dense example is labelled with: a class per pixel ("mask"), or objects' boxes and
# classes ("boxes").
LABEL_MAP, BOXES = "label_map", "boxes"
TARGETS = (LABEL_MAP, BOXES)


def _check_targets(targets: str) -> None:
  if targets not in TARGETS:
    raise ValueError(f"unknown targets {targets!r}; expected one of {TARGETS}")


CITYSCAPES_CLASSES = (
  "road",
  "sidewalk",
  "building",
  "wall",
  "fence",
  "pole",
  "traffic light",
  "traffic sign",
  "vegetation",
  "terrain",
  "sky",
  "person",
  "rider",
  "car",
  "truck",
  "bus",
  "train",
  "motorcycle",
  "bicycle",
)


# --- digit scenes -----------------------------------------------------------------------


class DigitScenes:
  """Canvases with 1..`max_objects` scikit-learn digits, scaled and placed without overlap.

  Scene i is generated from (seed, split, i) alone: deterministic, random access.
  "train" scenes use the digits of the classification train split, "validation"
  the held-out ones, so validation digits are unseen. A pixel belongs to a digit
  when its intensity is above `threshold`; the mask holds 1 + digit there (0 is
  background), the box is the tight box of those pixels and the digit's own
  mask is its plane of "instance_masks" (G, H, W).
  """

  def __init__(
    self,
    split: str,
    num_scenes: int,
    canvas: int = 64,
    seed: int = 0,
    sizes: tuple[int, int] = (14, 28),
    max_objects: int = 4,
    threshold: int = 96,
  ):
    base = digits("train" if split == "train" else "test", 8).source
    self.digits, self.labels = base.images[..., 0], base.labels
    self.split_code = 0 if split == "train" else 1
    self.num_scenes, self.canvas, self.seed = num_scenes, canvas, seed
    self.sizes, self.max_objects, self.threshold = sizes, max_objects, threshold

  def __len__(self) -> int:
    return self.num_scenes

  def __getitem__(self, i: int) -> dict:
    rng = np.random.default_rng([self.seed, self.split_code, i])
    image = np.zeros((self.canvas, self.canvas), np.uint8)
    mask = np.zeros((self.canvas, self.canvas), np.uint8)
    boxes = np.zeros((self.max_objects, 4), np.float32)
    classes = np.full(self.max_objects, -1, np.int32)
    instances = np.zeros((self.max_objects, self.canvas, self.canvas), np.uint8)
    placed = []
    for _ in range(int(rng.integers(1, self.max_objects + 1))):
      size = int(rng.integers(self.sizes[0], self.sizes[1] + 1))
      for _ in range(50):  # rejection sampling of a free square
        y, x = (int(v) for v in rng.integers(0, self.canvas - size + 1, size=2))
        if all(
          y + size <= py or py + ps <= y or x + size <= px or px + ps <= x for py, px, ps in placed
        ):
          break
      else:
        continue
      j = int(rng.integers(len(self.labels)))
      digit = np.asarray(Image.fromarray(self.digits[j]).resize((size, size), Image.BILINEAR))
      image[y : y + size, x : x + size] = digit
      on = digit > self.threshold
      if not on.any():
        continue
      k = len(placed)
      placed.append((y, x, size))
      mask[y : y + size, x : x + size][on] = 1 + self.labels[j]
      instances[k, y : y + size, x : x + size] = on
      rows, cols = np.nonzero(on)
      boxes[k] = (x + cols.min(), y + rows.min(), x + cols.max() + 1, y + rows.max() + 1)
      classes[k] = self.labels[j]
    return {
      "image": np.repeat(image[..., None], 3, -1),
      "mask": mask,
      "boxes": boxes,
      "classes": classes,
      "instance_masks": instances,
    }


def digit_scenes(
  targets: str,
  split: str,
  num_scenes: int,
  canvas: int = 64,
  seed: int = 0,
  sizes: tuple[int, int] = (14, 28),
  max_objects: int = 4,
) -> Dataset:
  _check_targets(targets)
  source = DigitScenes(split, num_scenes, canvas, seed, sizes, max_objects)
  if targets == LABEL_MAP:  # a class per pixel: the background is one
    return Dataset(source, 11, ("background",) + tuple(str(d) for d in range(10)))
  return Dataset(source, 10, tuple(str(d) for d in range(10)))


# --- Cityscapes ---------------------------------------------------------------------------


def cityscapes(root: str, split: str) -> Dataset:
  """`root/leftImg8bit/<split>/<city>/*_leftImg8bit.png` with
  `root/gtFine/<split>/<city>/*_gtFine_labelTrainIds.png` (19 classes, 255 ignore)."""
  images_dir = os.path.join(root, "leftImg8bit", split)
  if not os.path.isdir(images_dir):
    raise FileNotFoundError(
      f"Cityscapes not found: no folder {images_dir}. Expected the standard layout "
      f"(leftImg8bit/<split>/<city>/*_leftImg8bit.png, gtFine/<split>/<city>/"
      "*_gtFine_labelTrainIds.png; make the labelTrainIds files with cityscapesscripts' "
      "createTrainIdLabelImgs); set config.data_dir"
    )
  files = []
  for city in sorted(os.listdir(images_dir)):
    for name in sorted(os.listdir(os.path.join(images_dir, city))):
      if name.endswith("_leftImg8bit.png"):
        stem = name[: -len("_leftImg8bit.png")]
        label = os.path.join(root, "gtFine", split, city, f"{stem}_gtFine_labelTrainIds.png")
        if not os.path.exists(label):
          raise FileNotFoundError(f"label file missing for {name}: {label}")
        files.append({"path": os.path.join(images_dir, city, name), "mask_path": label})
  if not files:
    raise FileNotFoundError(f"no *_leftImg8bit.png images under {images_dir}")
  return Dataset(_Records(files), len(CITYSCAPES_CLASSES), CITYSCAPES_CLASSES)


class _Records:
  def __init__(self, records: list[dict]):
    self.records = records

  def __len__(self) -> int:
    return len(self.records)

  def __getitem__(self, i: int) -> dict:
    return self.records[i]


def load_dense_dataset(config, targets: str, split: str) -> Dataset:
  """config.dataset: "digit_scenes", "cityscapes" or "coco"; `targets`: one of `TARGETS`."""
  _check_targets(targets)
  if config.dataset == "digit_scenes":
    num = config.num_train_scenes if split == "train" else config.num_eval_scenes
    return digit_scenes(
      targets,
      split,
      num,
      config.image_size,
      config.get("scene_seed", 0),
      tuple(config.get("scene_digit_sizes", (14, 28))),
      config.get("max_objects", 4),
    )
  if not config.data_dir and config.dataset in ("cityscapes", "coco"):
    raise ValueError(f"dataset {config.dataset!r} needs config.data_dir")
  if config.dataset == "cityscapes":
    return cityscapes(config.data_dir, split)
  if config.dataset == "coco":
    source = coco.CocoSource(config.data_dir, split, config.get("max_objects", 100))
    return Dataset(source, len(source.class_names), source.class_names)
  raise ValueError(
    f"unknown dense dataset {config.dataset!r}; expected 'digit_scenes', 'cityscapes' or 'coco'"
  )


# --- preprocessing ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DensePreprocess:
  """Record -> fixed-shape example for segmentation or detection.

  Evaluation scales the image to fit `image_size` (H, W), aspect kept, and pads
  at the bottom right (mask: ignore). Training scales likewise times a random
  factor from `train_scale`, optionally mirrors (`flip`), and takes a random
  `crop_size` window (padded when smaller). Outputs {"image", "valid"} plus
  {"mask"} or {"boxes", "classes", "scale"} (input pixels per original pixel),
  and with `instance_masks` each object's mask, "instance_masks" (G, h, w) uint8,
  from the records' "instance_masks" (G, H, W) or COCO "segmentations".
  """

  targets: str  # one of TARGETS: a label map ("mask") or boxes and classes
  image_size: tuple[int, int]
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  crop_size: tuple[int, int] | None = None
  flip: bool = False
  train_scale: tuple[float, float] = (1.0, 1.0)
  max_objects: int = 100
  instance_masks: bool = False

  def __post_init__(self) -> None:
    _check_targets(self.targets)

  def _instances(self, record: dict, size: tuple[int, int]) -> np.ndarray:
    """The record's object masks, (G, H, W) uint8 (G = its box count)."""
    if "instance_masks" in record:
      return np.asarray(record["instance_masks"], np.uint8)
    planes = np.zeros((len(record["boxes"]), *size), np.uint8)
    for k, segmentation in enumerate(record.get("segmentations", ())):
      if segmentation:
        planes[k] = coco.decode_segmentation(segmentation, *size)
    return planes

  def _load(self, record: dict):
    if not record:  # padding
      return None, None
    try:
      if "image" in record:
        image = Image.fromarray(np.asarray(record["image"])).convert("RGB")
      else:
        image = read_rgb(record["path"])
      mask = None
      if self.targets == LABEL_MAP:
        if "mask" in record:
          mask = Image.fromarray(np.asarray(record["mask"], np.uint8))
        elif "mask_path" in record:
          with Image.open(record["mask_path"]) as f:
            mask = f.convert("L")
        else:  # an image to predict on: nothing labelled
          mask = Image.new("L", image.size, IGNORE)
      elif self.instance_masks:
        mask = self._instances(record, image.size[::-1])
      return image, mask
    except Exception as e:  # unreadable file: logged, example marked invalid
      warn_unreadable(str(record.get("path")), f"{type(e).__name__}: {e}")
      return None, None

  def _example(self, record: dict, rng: np.random.Generator | None) -> dict:
    image, mask = self._load(record)
    out_h, out_w = self.crop_size or self.image_size if rng is not None else self.image_size
    boxes = np.array(record.get("boxes", np.zeros((self.max_objects, 4))), np.float32)
    classes = np.array(record.get("classes", np.full(self.max_objects, -1)), np.int32)
    valid = image is not None
    if not valid:
      image = Image.new("RGB", self.image_size[::-1])
      mask = Image.new("L", self.image_size[::-1], IGNORE)
      classes[:] = -1
    w, h = image.size
    scale = min(self.image_size[0] / h, self.image_size[1] / w)
    if rng is not None:
      scale *= float(rng.uniform(*self.train_scale))
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    image = image.resize((nw, nh), Image.BILINEAR)
    flip = rng is not None and self.flip and rng.random() < 0.5
    if flip:
      image = image.transpose(Image.FLIP_LEFT_RIGHT)
    top = int(rng.integers(0, max(nh - out_h, 0) + 1)) if rng is not None else 0
    left = int(rng.integers(0, max(nw - out_w, 0) + 1)) if rng is not None else 0
    pixels = (np.asarray(image, np.float32) - self.mean) / self.std
    canvas = np.zeros((out_h, out_w, 3), np.float32)
    crop = pixels[top : top + out_h, left : left + out_w]
    canvas[: crop.shape[0], : crop.shape[1]] = crop
    out = {"image": canvas, "valid": np.float32(valid), "scale": np.float32(scale)}

    def place(plane: Image.Image, fill: int) -> np.ndarray:  # as the image: scale, flip, crop
      labels = np.asarray(plane.resize((nw, nh), Image.NEAREST), np.uint8)
      labels = labels[:, ::-1] if flip else labels
      full = np.full((out_h, out_w), fill, np.int32)
      part = labels[top : top + out_h, left : left + out_w]
      full[: part.shape[0], : part.shape[1]] = part
      return full

    if self.targets == LABEL_MAP:
      out["mask"] = place(mask, IGNORE)
    else:
      b = boxes * scale
      if flip:
        b = np.stack([nw - b[:, 2], b[:, 1], nw - b[:, 0], b[:, 3]], -1)
      b = np.clip(
        b - np.array([left, top, left, top], np.float32),
        0,
        np.array([out_w, out_h, out_w, out_h], np.float32),
      )
      keep = (classes >= 0) & (b[:, 2] - b[:, 0] >= 1) & (b[:, 3] - b[:, 1] >= 1)
      out["boxes"] = np.where(keep[:, None], b, 0).astype(np.float32)
      out["classes"] = np.where(keep, classes, -1).astype(np.int32)
      if self.instance_masks:
        planes = np.zeros((len(classes), out_h, out_w), np.uint8)
        for k in np.flatnonzero(keep) if valid else ():
          planes[k] = place(Image.fromarray(mask[k]), 0)
        out["instance_masks"] = planes
    return out

  def train(self, record: dict, rng: np.random.Generator) -> dict:
    return self._example(record, rng)

  def eval(self, record: dict) -> dict:
    return self._example(record, None)

  def blank(self) -> dict:
    """A padding example (valid = 0) of the evaluation shape."""
    return self._example({}, None)
