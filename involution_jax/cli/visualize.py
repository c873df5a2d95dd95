"""`involution-visualize WEIGHTS IMAGE`: a PNG of the kernels a model generates for the
image (captured and drawn by `inference.kernels`).

    involution-visualize runs/default x.jpg --layer layer2_0/conv2 \
        --out kernels.png [--groups 0,1,2,3] [--pixels 3,4 5,5]
    involution-visualize runs/mask_inv scene.png --layer mask_head/convs_0 [--detection 1]
"""

from __future__ import annotations

import argparse
import os
import sys

from involution_jax import cli


def _pixel(text: str) -> tuple[int, int]:
  try:
    i, j = text.split(",")
    return int(i), int(j)
  except ValueError:
    raise ValueError(f"--pixels: expected i,j (two integers), got {text!r}") from None


@cli.command("involution-visualize")
def main(argv: list[str] | None = None) -> int:
  """`involution-visualize WEIGHTS IMAGE`: a PNG of the kernels a model generates."""
  parser = cli.parser(
    "involution-visualize",
    "Draw the kernels a model's involution layers generate for an image (a PNG).",
    [
      "involution-visualize runs/default docs/digit7.png --layer layer1_0/conv2 "
      "--out kernels.png --pixels 2,3 4,4 6,5"
    ],
  )
  cli.weights_argument(parser, old_option=True)
  parser.add_argument("image", nargs="?", default=None, help="the image file to run the model on")
  parser.add_argument("--image", dest="image_option", help=argparse.SUPPRESS)
  parser.add_argument(
    "--layer",
    default=None,
    help="involution layer path (default: the first); an unknown name lists the available ones",
  )
  parser.add_argument(
    "--out",
    default="kernels.png",
    help="output PNG (default: %(default)s; .png added to a name without a suffix)",
  )
  parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
  parser.add_argument(
    "--groups", default="0,1,2,3", help="comma-separated group indices (default: %(default)s)"
  )
  parser.add_argument(
    "--pixels", nargs="*", default=None, help="output pixels i,j for the K x K panels"
  )
  parser.add_argument(
    "--detection",
    type=int,
    default=0,
    help="mask-head layers: which detection's RoI, by rank (default 0: the best)",
  )
  cli.output_arguments(parser, "what was drawn: layer, kernel shape, file, size")
  args = parser.parse_args(argv)
  weights = cli.given_weights(parser, args)
  if args.image and args.image_option:
    parser.error(f"IMAGE given twice: {args.image} and --image {args.image_option}")
  image = args.image or args.image_option
  if not image:
    parser.error("the following arguments are required: IMAGE")
  if not os.path.isfile(image):
    raise FileNotFoundError(f"no such image: {image}")
  import numpy as np

  from involution_jax.host.paths import output_file
  from involution_jax.inference.kernels import capture, plot_kernels
  from involution_jax.tasks import task_named
  from involution_jax.weights import (
    fitting_their_description,
    load_weights,
    model_from_info,
    paths_read,
  )

  pixels = [_pixel(p) for p in args.pixels] if args.pixels else None
  try:
    groups = [int(g) for g in args.groups.split(",")]
  except ValueError:
    raise ValueError(f"--groups: expected comma-separated integers, got {args.groups!r}") from None
  args.out = output_file(
    args.out, args.overwrite, inputs=[image, *paths_read(weights)], default_suffix=".png"
  )
  variables, info = load_weights(weights, quiet=args.quiet)
  task = task_named(info.task)
  if task.input_key != "image":
    raise ValueError(
      f"{weights} holds a {info.task} model: involution-visualize draws the kernels "
      "an image model generates"
    )
  preprocess = task.preprocess_from_info(info)
  example = preprocess.eval({"path": image, "label": 0})
  if not example["valid"]:
    raise ValueError(f"cannot read image {image}")
  with fitting_their_description():
    outputs, kernels = capture(model_from_info(info), variables, example["image"][None])
  if not kernels:
    raise ValueError(f"the model in {weights} has no involution layers")
  layer = args.layer or next(iter(kernels))
  if layer not in kernels:
    raise ValueError(f"unknown layer {layer!r}; involution layers: {', '.join(kernels)}")
  kernel, region, what = kernels[layer][0], None, ""
  if layer.startswith("mask_head/"):
    kernel, region, what = _detection_kernel(outputs, kernels[layer], args.detection)
  shown = (
    np.clip(example["image"] * np.array(preprocess.std) + np.array(preprocess.mean), 0, 255) / 255
  )
  size = plot_kernels(
    shown, kernel, args.out, groups=groups, pixels=pixels, layer=layer, region=region
  )
  result = dict(layer=layer, kernel_shape=list(kernel.shape), out=args.out, size=list(size))
  text = f"{layer}{what}: kernels {kernel.shape} -> {args.out} ({size[0]}x{size[1]})"
  cli.print_result(args, result, text)
  return 0


def _detection_kernel(outputs: dict, kernels, rank: int):
  """The mask-head kernel (Ho, Wo, G, K, K) of one image's detection `rank`, its box, a label.

  kernels: (N, Ho, Wo, G, K, K), one per detection slot."""
  import numpy as np

  valid = np.asarray(outputs["valid"][0])
  if not 0 <= rank < int(valid.sum()):
    raise ValueError(f"--detection {rank}: the image has {int(valid.sum())} detections")
  index = int(np.flatnonzero(valid)[rank])
  box = np.asarray(outputs["boxes"][0, index], np.float64)
  label = (
    f" (detection {rank}: class {int(outputs['classes'][0, index])}, "
    f"score {float(outputs['scores'][0, index]):.2f})"
  )
  return kernels[index], tuple(box), label


if __name__ == "__main__":
  sys.exit(main())
