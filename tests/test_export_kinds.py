"""Every model kind exports: the artifact runs where the package cannot be imported, its
.json describes its input and outputs, and it returns what the model does."""

import json
import pickle
import subprocess
import sys

import jax
import numpy as np
from flax import traverse_util
from helpers import load_config, python_env, tiny_digits_config

from involution_jax.cli import export as export_command
from involution_jax.inference import export
from involution_jax.tasks import get_task, task_named
from involution_jax.weights import ModelInfo, checkpoints, model_from_info

# A text classifier's info as its task records it (its data, Rotten Tomatoes, is a download).
REVIEWS = ModelInfo(
  "sequence",
  2,
  task="text_classification",
  model_kwargs=dict(
    head="pooled", vocab_size=40, width=16, depth=1, kernel_sizes=[3], heads=2, max_length=12
  ),
  class_names=["fresh", "rotten"],
  context=12,
  vocabulary=[f"w{i}" for i in range(38)],
  vocabulary_sha256="0" * 64,
)
TINY_LM = dict(width=16, depth=1, kernel_sizes=(3,), heads=2, group_channels=8)
KINDS = {  # kind -> config (None: REVIEWS)
  "classification": lambda: tiny_digits_config(),
  "semantic_fpn": lambda: load_config("digitscenes_seg"),
  "upernet": lambda: load_config("digitscenes_upernet"),
  "retinanet": lambda: load_config("digitscenes_det"),
  "faster_rcnn": lambda: load_config("digitscenes_rcnn", "faster_conv"),
  "mask_rcnn": lambda: load_config("digitscenes_rcnn", "mask_inv"),
  "char_lm": lambda: load_config("charlm", "involution", context=16),
  "text_classifier": None,
}


def _info(kind: str) -> ModelInfo:
  if KINDS[kind] is None:
    return REVIEWS
  config = KINDS[kind]()
  if kind == "char_lm":
    config.model_kwargs.update(TINY_LM)
  task = get_task(config)
  return task.model_info(config, task.dataset(config, "train"))


def _random_variables(info: ModelInfo, inputs: np.ndarray) -> dict:
  """Variables of the model's shapes, filled from a seeded generator (no init compiled):
  small weights, BatchNorm variances of one."""
  model = model_from_info(info)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), inputs)
  rng = np.random.default_rng(0)
  flat = traverse_util.flatten_dict(shapes, sep="/")
  filled = {
    k: np.ones(s.shape, s.dtype)
    if k.endswith("/var")
    else (0.2 * rng.standard_normal(s.shape)).astype(s.dtype)
    for k, s in flat.items()
  }
  return traverse_util.unflatten_dict(filled, sep="/")


def _inputs(info: ModelInfo, batch: int) -> np.ndarray:
  given = task_named(info.task).serving_input(info)
  rng = np.random.default_rng(1)
  if given.dtype == "int32":  # token ids, padding (0) after the text
    tokens = rng.integers(2, 40 if info.vocabulary else 256, (batch, *given.shape))
    tokens[0, given.shape[0] // 2 :] = 0
    return tokens.astype(np.int32)
  return rng.standard_normal((batch, *given.shape)).astype(np.float32)


# Over 20 s: eight models exported, each run twice (here, and in a jax-only process).
def test_every_model_kind_exports_and_runs_without_the_package(tmp_path):
  expected, shapes = {}, {}
  for kind in KINDS:
    info = _info(kind)
    x = _inputs(info, 3)
    variables = _random_variables(info, x[:1])
    if kind == "semantic_fpn":  # this one through the command, from a checkpoint
      mngr = checkpoints.manager(str(tmp_path / kind), async_save=False)
      checkpoints.save(mngr, 1, variables=variables, model_info=info)
      mngr.close()
      assert export_command.main([str(tmp_path / kind), str(tmp_path / f"{kind}.jaxexport")]) == 0
    else:
      export.save(export.export_model(variables, info), info, str(tmp_path / f"{kind}.jaxexport"))
    # The model's serving function with its weights as constants, as the artifact holds it
    # (constants fold otherwise than arguments: a float32 rounding apart, which the
    # detectors' sorting and box sampling would make visible).
    serve = task_named(info.task).serving_fn(model_from_info(info))
    expected[kind] = jax.tree.map(np.asarray, jax.jit(lambda x: serve(variables, x))(x))
    np.save(tmp_path / f"{kind}.npy", x)
    metadata = json.loads((tmp_path / f"{kind}.jaxexport.json").read_text())
    given = task_named(info.task).serving_input(info)
    assert metadata["task"] == info.task and metadata["class_names"] == info.names
    assert metadata["input"]["shape"] == ["batch", *given.shape], kind
    assert metadata["input"]["dtype"] == given.dtype
    assert metadata["input"]["preparation"] == given.preparation and metadata["returns"]
    recorded = info.to_json()  # the normalisation, or the context and the vocabulary
    for key in ("image_size", "mean", "std", "eval_crop", "context", "vocabulary"):
      assert metadata.get(key) == recorded.get(key), (kind, key)
    outputs = jax.tree.map(
      lambda a: {"shape": ["batch", *a.shape[1:]], "dtype": str(a.dtype)}, expected[kind]
    )
    assert metadata["outputs"] == outputs, kind
    shapes[kind] = jax.tree.map(lambda a: a.shape, expected[kind])
  # One fresh interpreter with jax only (the package cannot be imported) runs them all.
  script = f"""
import pickle, sys, numpy as np, jax
sys.modules["involution_jax"] = None
results = {{}}
for kind in {list(KINDS)!r}:
  exported = jax.export.deserialize(bytearray(open(f"{tmp_path}/{{kind}}.jaxexport", "rb").read()))
  x = np.load(f"{tmp_path}/{{kind}}.npy")
  results[kind] = jax.tree.map(np.asarray, exported.call(x))
pickle.dump(results, open("{tmp_path}/results.pkl", "wb"))
"""
  env = python_env()
  env["PYTHONPATH"] = ""
  done = subprocess.run(
    [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
  )
  assert done.returncode == 0, done.stderr[-3000:]
  results = pickle.loads((tmp_path / "results.pkl").read_bytes())
  for kind, want in expected.items():
    assert jax.tree.map(lambda a: a.shape, results[kind]) == shapes[kind], kind

    def same(got, want, kind=kind):
      if got.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=kind)
      else:
        np.testing.assert_array_equal(got, want, err_msg=kind)

    jax.tree.map(same, results[kind], want)


def test_the_text_classifier_serves_with_the_padding_mask_of_training():
  """Its artifact takes ids only: the mask it makes of them is WordsPreprocess's, for an
  empty text, a short one and one longer than the context."""
  from involution_jax.data import labelled_text

  model = model_from_info(REVIEWS)
  prep = labelled_text.WordsPreprocess(REVIEWS.context)
  index = {w: i + 2 for i, w in enumerate(REVIEWS.vocabulary)}
  texts = ["", "w3 w5, unseen", " ".join(f"w{i}" for i in range(30))]
  examples = [
    prep.eval({"tokens": labelled_text.encode_words(t, index), "label": 0}) for t in texts
  ]
  tokens = np.stack([e["tokens"] for e in examples])
  variables = _random_variables(REVIEWS, tokens[:1])
  served = task_named(REVIEWS.task).serving_fn(model)(variables, tokens)
  masks = np.stack([e["mask"] for e in examples])
  trained = model.apply(variables, tokens, train=False, mask=masks)
  np.testing.assert_allclose(served, trained, rtol=1e-6, atol=1e-6)
  assert masks[0].sum() == 1 and masks[2].sum() == REVIEWS.context  # the edge cases ran
