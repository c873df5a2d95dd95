"""Predict on image files with a trained or converted model: classes, masks or boxes.

    involution-predict WEIGHTS IMAGE_OR_FOLDER [...] [--top-k 5] [--batch-size 32] [--json]
        [--out-dir DIR]   # segmentation / detection: PNGs with masks or boxes drawn
    python -m involution_jax.predict ...   # the same

WEIGHTS: a training workdir or checkpoint folder, or official `.pth` /
`.pdparams` weights. Images are prepared by the same function the task's
evaluation uses; the model is compiled once per batch shape (the last batch is
padded). Unreadable files are reported, the others still predicted.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from involution_jax import cli, drawing
from involution_jax.data.classification import IMAGE_EXTENSIONS
from involution_jax.data.images import read_rgb
from involution_jax.models import detection, rcnn, segmentation
from involution_jax.weights import (
  fitting_their_description,
  load_weights,
  model_from_info,
  preprocess_from_info,
)


def image_files(paths: Iterable[str]) -> list[str]:
  """Files as given, folders expanded (recursively, sorted) to their image files."""
  out = []
  for path in paths:
    if os.path.isdir(path):
      for root, _, names in sorted(os.walk(path)):
        out += [
          os.path.join(root, n) for n in sorted(names) if n.lower().endswith(IMAGE_EXTENSIONS)
        ]
    elif os.path.exists(path):
      out.append(path)
    else:
      raise FileNotFoundError(f"no such image or folder: {path}")
  return out


def _read_error(path: str) -> str:
  try:
    read_rgb(path)
    return "unreadable image"
  except Exception as e:  # the reason to report
    return f"{type(e).__name__}: {e}"


def _forward(model, task: str):
  """The jitted per-batch prediction of a task."""
  if task == "classification":
    return jax.jit(lambda v, x: jax.nn.softmax(model.apply(v, x, train=False), axis=-1))
  if task == "segmentation":
    return jax.jit(
      lambda v, x: jnp.argmax(
        segmentation.resize_bilinear(model.apply(v, x, train=False), x.shape[1:3]), axis=-1
      )
    )

  if task == "two_stage_detection":  # the model post-processes: boxes (and 28 x 28 masks)
    return jax.jit(lambda v, x: model.apply(v, x, train=False))

  def detect(v, x):
    cls, reg = model.apply(v, x, train=False)
    anchors = jnp.asarray(model.anchors(x.shape[1:3]))
    return jax.vmap(lambda c, r: detection.postprocess(c, r, anchors, x.shape[1:3]))(cls, reg)

  return jax.jit(detect)


def _image_size(path: str) -> tuple[int, int]:
  """(width, height) of an image file."""
  with Image.open(path) as image:
    return image.size


class Predictor:
  """A model with its weights, input preparation and class names, ready to predict."""

  def __init__(self, variables: dict, info: dict, batch_size: int = 32, quiet: bool = False):
    self.info, self.batch_size, self.quiet = info, batch_size, quiet
    self.task = info.get("task", "classification")
    self.preprocess = preprocess_from_info(info)
    self.class_names = list(info.get("class_names") or map(str, range(info["num_classes"])))
    self.variables = jax.device_put(variables)
    self._predict = _forward(model_from_info(info), self.task)

  @classmethod
  def load(cls, weights: str, batch_size: int = 32, quiet: bool = False) -> Predictor:
    """`weights`: anything `weights.load_weights` reads; `quiet`: no progress bars."""
    return cls(*load_weights(weights, quiet=quiet), batch_size=batch_size, quiet=quiet)

  def run(self, images: np.ndarray):
    """Prepared images (N, H, W, 3) -> the task's outputs for each, in batches of
    `batch_size`, or of the power of two >= N when that is smaller: memory follows the
    images, not the flag, and a predictor compiles at most log2(batch_size) + 1 sizes."""
    outs = []
    batch = min(self.batch_size, 1 << max(len(images) - 1, 0).bit_length())
    starts = range(0, len(images), batch)
    for start in cli.progress(starts, desc="predict", unit="batch", leave=False, quiet=self.quiet):
      chunk = images[start : start + batch]
      padded = np.zeros((batch, *chunk.shape[1:]), np.float32)
      padded[: len(chunk)] = chunk
      with fitting_their_description():
        out = jax.device_get(self._predict(self.variables, jnp.asarray(padded)))
      outs.append(jax.tree.map(lambda a: a[: len(chunk)], out))
    return jax.tree.map(lambda *a: np.concatenate(a), *outs) if outs else None

  def predict(self, paths: Sequence[str], top_k: int = 5) -> list[dict]:
    """One dict per path: {"path", "error"} or the task's result.

    classification: "top" [{"class", "index", "probability"}]; segmentation:
    "mask" (H, W) class indices at the image's size and "class_fractions";
    detection: "detections" [{"class", "index", "score", "box" (x1, y1, x2, y2)}].
    """
    examples = [
      self.preprocess.eval({"path": p, "label": 0})
      for p in cli.progress(paths, desc="read", unit="image", leave=False, quiet=self.quiet)
    ]
    readable = [i for i, e in enumerate(examples) if e["valid"]]
    results = [{"path": p, "error": _read_error(p)} for p in paths]
    if not readable:
      return results
    outputs = self.run(np.stack([examples[i]["image"] for i in readable]))
    for row, i in enumerate(readable):
      out = jax.tree.map(lambda a: a[row], outputs)
      results[i] = {
        "path": paths[i],
        **getattr(self, f"_{self.task}")(out, paths[i], top_k, examples[i]),
      }
    return results

  def classify(self, paths: Sequence[str], top_k: int = 5) -> list[dict]:
    return self.predict(paths, top_k)

  def _classification(self, probabilities, path, top_k, example) -> dict:
    best = np.argsort(-probabilities)[: min(top_k, len(self.class_names))]
    return {
      "top": [
        {"class": self.class_names[j], "index": int(j), "probability": float(probabilities[j])}
        for j in best
      ]
    }

  def _segmentation(self, labels, path, top_k, example) -> dict:
    w, h = _image_size(path)
    scale = float(example["scale"])
    region = labels[: max(1, round(h * scale)), : max(1, round(w * scale))]
    mask = np.asarray(Image.fromarray(region.astype(np.uint8)).resize((w, h), Image.NEAREST))
    counts = np.bincount(mask.reshape(-1), minlength=len(self.class_names))
    return {
      "mask": mask,
      "class_fractions": {
        self.class_names[c]: float(n / mask.size) for c, n in enumerate(counts) if n
      },
    }

  def _boxes(self, out, size: tuple[int, int], example) -> list[tuple[int, dict]]:
    """(index in `out`, detection) of each valid box, in the pixels of the image of `size`
    (width, height), clipped to it (the model sees it padded below and to the right); a
    box wholly in the padding, of no size once clipped, is no detection."""
    w, h = size
    scale = float(example["scale"])
    found = []
    for i in np.flatnonzero(out["valid"]):
      x1, y1, x2, y2 = np.clip(np.asarray(out["boxes"][i], np.float64) / scale, 0, [w, h, w, h])
      if x2 > x1 and y2 > y1:
        c = int(out["classes"][i])
        found.append(
          (
            int(i),
            {
              "class": self.class_names[c],
              "index": c,
              "score": float(out["scores"][i]),
              "box": [round(float(v), 2) for v in (x1, y1, x2, y2)],
            },
          )
        )
    return found

  def _detection(self, out, path, top_k, example) -> dict:
    return {"detections": [d for _, d in self._boxes(out, _image_size(path), example)]}

  def _two_stage_detection(self, out, path, top_k, example) -> dict:
    """As detection; Mask R-CNN adds each detection's "mask" (H, W) bool at the image's size."""
    w, h = _image_size(path)
    found = self._boxes(out, (w, h), example)
    if "masks" in out and found:
      keep = [i for i, _ in found]
      boxes = out["boxes"][keep] / float(example["scale"])  # where the 28 x 28 mask lies
      pasted = np.asarray(rcnn.paste_masks(out["masks"][keep], boxes, (h, w))) >= 0.5
      for (_, d), plane in zip(found, pasted):
        d["mask"] = plane
    return {"detections": [d for _, d in found]}


def format_table(results: list[dict]) -> str:
  lines = []
  for r in results:
    if "error" in r:
      lines.append(f"{r['path']}: ERROR {r['error']}")
      continue
    lines.append(r["path"])
    if "top" in r:
      lines += [f"  {t['probability']:7.2%}  {t['class']}" for t in r["top"]]
    elif "class_fractions" in r:
      lines += [
        f"  {f:7.2%}  {name}"
        for name, f in sorted(r["class_fractions"].items(), key=lambda kv: -kv[1])
      ]
    else:
      lines += [f"  {d['score']:6.3f}  {d['class']:<12} {d['box']}" for d in r["detections"]]
  return "\n".join(lines)


def drawing_paths(files: Sequence[str], out_dir: str) -> list[str]:
  """Where each of `files` is drawn: `out_dir`/NAME.png, NAME the file's own name without
  its suffix, or, for different files that would share one, the file's path below the
  folder all `files` are in, with "-" between folders and "_" before the suffix
  (`a/x.png` -> `a-x_png.png`), and a number where even those meet. Never one of `files`
  (a ValueError names it)."""
  images = list(dict.fromkeys(os.path.realpath(f) for f in files))  # a file listed twice
  stems = [os.path.splitext(os.path.basename(f))[0] for f in images]
  shared = Counter(stems)
  top = os.path.commonpath([os.path.dirname(f) for f in images]) if images else ""
  names, taken = {}, set()
  for image, stem in zip(images, stems):
    if shared[stem] > 1:
      stem, suffix = os.path.splitext(os.path.relpath(image, top))
      stem = stem.replace(os.sep, "-") + suffix.replace(".", "_")
    name, n = stem, 1
    while name in taken:
      n += 1
      name = f"{stem}-{n}"
    taken.add(name)
    names[image] = os.path.join(out_dir, name + ".png")
  paths = [names[os.path.realpath(f)] for f in files]
  cli.refuse_over_inputs(paths, files)
  return paths


def write_pictures(results: list[dict], class_names: Sequence[str], out_dir: str) -> list[str]:
  """PNGs of the masks or boxes drawn on each readable image (named by `drawing_paths`);
  returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = drawing_paths([r["path"] for r in results], out_dir)
  written = []
  for r, out in zip(results, paths):
    if "error" in r or "top" in r:
      continue
    image = np.asarray(read_rgb(r["path"]))
    if "mask" in r:
      picture = drawing.overlay_mask(image, r["mask"], len(class_names))
    else:
      picture = drawing.draw_boxes(
        drawing.overlay_instances(image, r["detections"]), r["detections"]
      )
    Image.fromarray(picture).save(out)
    written.append(out)
  return written


def _printable(result: dict) -> dict:
  """A result without its mask arrays (instance masks become their pixel counts)."""
  out = {k: v for k, v in result.items() if k != "mask"}
  if "detections" in out:
    out["detections"] = [
      {k: v for k, v in d.items() if k != "mask"}
      | ({"mask_pixels": int(d["mask"].sum())} if "mask" in d else {})
      for d in out["detections"]
    ]
  return out


@cli.command("involution-predict")
def main(argv: list[str] | None = None) -> int:
  """`involution-predict WEIGHTS IMAGES...`: classes, masks or boxes for image files."""
  parser = cli.parser(
    "involution-predict",
    "Predict classes (or masks, or boxes) for image files with a "
    "trained, converted or official model.",
    [
      "involution-predict runs/default docs/digit7.png",
      "involution-predict RedNet50_pretrained.pdparams photos/ --json --batch-size 64",
      "involution-predict runs/det_inv scene.png --out-dir drawn/ --min-score 0.5",
    ],
  )
  parser.add_argument("weights", help=cli.WEIGHTS_HELP)
  parser.add_argument("images", nargs="+", help="image files or folders")
  parser.add_argument("--top-k", type=int, default=5, help="classification: classes listed")
  parser.add_argument("--batch-size", type=int, default=32)
  parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
  cli.add_quiet_argument(parser)
  parser.add_argument(
    "--min-score",
    type=float,
    default=0.3,
    help="detection: list and draw only boxes scoring at least this",
  )
  parser.add_argument(
    "--out-dir",
    default=None,
    help="segmentation / detection: write PNGs with the predictions drawn (NAME.png for "
    "NAME.jpg; images that share a name are told apart by their paths)",
  )
  args = parser.parse_args(argv)
  if not 0 <= args.min_score <= 1:
    raise ValueError(f"--min-score must be in [0, 1], got {args.min_score}")
  if args.top_k < 1 or args.batch_size < 1:
    raise ValueError(
      f"--top-k and --batch-size must be >= 1, got {args.top_k} and {args.batch_size}"
    )
  files = image_files(args.images)
  if not files:
    raise FileNotFoundError(f"no image files in {args.images}")
  if args.out_dir:
    drawing_paths(files, args.out_dir)  # refused before the model loads
  predictor = Predictor.load(args.weights, args.batch_size, quiet=args.quiet)
  results = predictor.predict(files, args.top_k)
  for r in results:
    if "detections" in r:
      r["detections"] = [d for d in r["detections"] if d["score"] >= args.min_score]
  if args.out_dir:
    for path in write_pictures(results, predictor.class_names, args.out_dir):
      print(f"wrote {path}", file=sys.stderr)
  printable = [_printable(r) for r in results]
  print(json.dumps(printable, indent=2) if args.json else format_table(printable))
  return 1 if all("error" in r for r in results) else 0


if __name__ == "__main__":
  sys.exit(main())
