"""`involution-predict WEIGHTS FILES... [--text TEXT ...]`: what a model makes of its inputs.

    involution-predict WEIGHTS IMAGE_OR_FOLDER [...] [--top_k 5] [--batch_size 32] [--json]
        [--out_dir DIR]   # segmentation / detection: PNGs with masks or boxes drawn
    involution-predict WEIGHTS [TEXT_FILE ...] [--text TEXT ...]   # text models

Image models: classes, masks or boxes; a text classifier: classes; a language model: the
text that follows each file's text or each --text.

The predictions are `inference.predictor.Predictor`'s; this module prints them as a
table or JSON and draws them.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from collections.abc import Sequence

import numpy as np

from involution_jax import cli
from involution_jax.host.paths import refuse_over_inputs


def format_table(results: list[dict]) -> str:
  lines = []
  for r in results:
    source = r["path"] if "path" in r else json.dumps(r["text"], ensure_ascii=False)
    if "error" in r:
      lines.append(f"{source}: ERROR {r['error']}")
      continue
    lines.append(source)
    if "continuation" in r:
      lines.append(f"  ...{r['continuation']}")
    elif "top" in r:
      lines += [f"  {t['probability']:7.2%}  {t['class']}" for t in r["top"]]
    elif "class_fractions" in r:
      lines += [
        f"  {f:7.2%}  {name}"
        for name, f in sorted(r["class_fractions"].items(), key=lambda kv: -kv[1])
      ]
    elif "detections" in r:
      lines += [f"  {d['score']:6.3f}  {d['class']:<12} {d['box']}" for d in r["detections"]]
    else:  # a task's own result: its fields as they are
      lines += [f"  {k}: {v}" for k, v in r.items() if k not in ("path", "text")]
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
  refuse_over_inputs(paths, files)
  return paths


def write_pictures(results: list[dict], class_names: Sequence[str], out_dir: str) -> list[str]:
  """PNGs of the masks or boxes drawn on each readable image (named by `drawing_paths`);
  returns their paths."""
  from PIL import Image

  from involution_jax.data.images import read_rgb
  from involution_jax.inference import drawing

  os.makedirs(out_dir, exist_ok=True)
  paths = drawing_paths([r["path"] for r in results], out_dir)
  written = []
  for r, out in zip(results, paths):
    if not ("mask" in r or "detections" in r):  # an error, classes: nothing to draw
      continue
    image = np.asarray(read_rgb(r["path"]))
    if "mask" in r:
      picture = drawing.overlay_mask(image, r["mask"], len(class_names), class_names=class_names)
    else:
      picture = drawing.draw_boxes(
        drawing.overlay_instances(image, r["detections"]), r["detections"]
      )
    Image.fromarray(picture).save(out)
    written.append(out)
  return written


def _printable(result: dict) -> dict:
  """A result without its mask arrays (instance masks become their pixel counts), and any
  other array (a task's own result) as its shape."""
  out = {
    k: {"shape": list(v.shape)} if isinstance(v, np.ndarray) else v
    for k, v in result.items()
    if k != "mask"
  }
  if "detections" in out:
    out["detections"] = [
      {k: v for k, v in d.items() if k != "mask"}
      | ({"mask_pixels": int(d["mask"].sum())} if "mask" in d else {})
      for d in out["detections"]
    ]
  return out


@cli.command("involution-predict")
def main(argv: list[str] | None = None) -> int:
  """`involution-predict WEIGHTS FILES... [--text TEXT ...]`: predictions, printed."""
  parser = cli.parser(
    "involution-predict",
    "Predict with a trained, converted or official model: classes, masks or boxes for "
    "image files; classes for texts (a text classifier); the text that follows (a "
    "language model).",
    [
      "involution-predict runs/default docs/digit7.png",
      "involution-predict RedNet50_pretrained.pdparams photos/ --json --batch_size 64",
      "involution-predict runs/det_inv scene.png --out_dir drawn/ --min_score 0.5",
      'involution-predict runs/sentiment reviews.txt --text "a warm, funny film"',
      'involution-predict runs/charlm --text "The with statement"',
    ],
  )
  cli.weights_argument(parser)
  parser.add_argument(
    "images",
    nargs="*",
    help="image files or folders (their images); for a text model, UTF-8 text files "
    "(before any --text)",
  )
  parser.add_argument(
    "--text",
    action="append",
    default=[],
    help="text models: a text to classify or continue (repeat for several)",
  )
  parser.add_argument("--top_k", type=int, default=5, help="classification: classes listed")
  parser.add_argument(
    "--batch_size", type=int, default=32, help="images run at once (default: %(default)s)"
  )
  cli.output_arguments(parser, "the predictions instead of a table")
  parser.add_argument(
    "--min_score",
    type=float,
    default=0.3,
    help="detection: list and draw only boxes scoring at least this",
  )
  parser.add_argument(
    "--out_dir",
    default=None,
    help="segmentation / detection: write PNGs with the predictions drawn (NAME.png for "
    "NAME.jpg; images that share a name are told apart by their paths)",
  )
  args = parser.parse_args(argv)
  weights = cli.given_weights(parser, args)
  if not 0 <= args.min_score <= 1:
    raise ValueError(f"--min_score must be in [0, 1], got {args.min_score}")
  if args.top_k < 1 or args.batch_size < 1:
    raise ValueError(
      f"--top_k and --batch_size must be >= 1, got {args.top_k} and {args.batch_size}"
    )
  from involution_jax.inference.predictor import Predictor, image_files

  files = image_files(args.images)
  if not files and not args.text:
    raise FileNotFoundError(f"no image files in {args.images}; give files, or --text")
  if args.out_dir:
    drawing_paths(files, args.out_dir)  # refused before the model loads
  predictor = Predictor.load(weights, args.batch_size, quiet=args.quiet)
  if args.out_dir and predictor.task.input_key != "image":
    raise ValueError(f"--out_dir draws on images; {weights} holds a {predictor.info.task} model")
  results = predictor.predict(files, args.top_k)
  if args.text:
    results += predictor.predict_texts(args.text, args.top_k)
  for r in results:
    if "detections" in r:
      r["detections"] = [d for d in r["detections"] if d["score"] >= args.min_score]
  if args.out_dir:
    for path in write_pictures(results, predictor.class_names, args.out_dir):
      if not args.quiet:
        print(f"wrote {path}", file=sys.stderr)
  printable = [_printable(r) for r in results]
  cli.print_result(args, printable, format_table(printable))
  return 1 if all("error" in r for r in results) else 0


if __name__ == "__main__":
  sys.exit(main())
