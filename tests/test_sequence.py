"""Sequence models: every mixer causal, decoding equal to the full pass, generation,
DynamicConv against a float64 NumPy re-creation of Wu et al.'s formula, byte text."""

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import ROOT, load_config, one_device_mesh

from involution_jax.data import text
from involution_jax.inference import generation
from involution_jax.models.mixers import MIXERS, DynamicConv
from involution_jax.models.sequence import SequenceModel, generate, prefill, sample

T = 12


def _model(mixer, **fields):
  base = dict(width=32, depth=2, kernel_sizes=(3, 5), heads=4, group_channels=8, max_length=64)
  return SequenceModel(mixer=mixer, **{**base, **fields})


def _tokens(seed=0, batch=2, length=T):
  return jax.random.randint(jax.random.PRNGKey(seed), (batch, length), 0, 256)


MODELS = [(m, {}) for m in MIXERS] + [
  ("attention", dict(positions="learned")),
  ("involution", dict(kernel_normalization="softmax")),
]


@pytest.mark.parametrize("mixer, fields", MODELS)
@pytest.mark.parametrize("train", [False, True])
def test_every_mixer_is_causal(mixer, fields, train):
  dropconnect = 0.1 if mixer != "conv" else 0.0
  model = _model(mixer, depth=1, kernel_sizes=5, dropout=0.2, dropconnect=dropconnect, **fields)
  tokens = _tokens()
  variables = model.init(jax.random.PRNGKey(1), tokens, train=False)
  apply = jax.jit(
    lambda tokens: model.apply(
      variables, tokens, train=train, rngs={"dropout": jax.random.PRNGKey(2)}
    )
  )
  base = apply(tokens)
  for t in (0, 5, T - 2):
    changed = tokens.at[:, t + 1 :].set((tokens[:, t + 1 :] + 17) % 256)
    out = apply(changed)
    np.testing.assert_array_equal(out[:, : t + 1], base[:, : t + 1])
    assert not np.allclose(out[:, t + 1 :], base[:, t + 1 :])  # the test can see a change


@pytest.mark.parametrize("mixer, fields", MODELS)
def test_decoding_step_by_step_equals_the_full_pass(mixer, fields):
  model = _model(mixer, **fields)
  tokens = _tokens(seed=3)
  variables = model.init(jax.random.PRNGKey(4), tokens, train=False)
  full = jax.jit(lambda t: model.apply(variables, t, train=False))(tokens)
  decoder = model.clone(decode=True)
  cache = decoder.init(jax.random.PRNGKey(0), tokens[:, :1], train=False)["cache"]
  step = jax.jit(
    lambda cache, token: decoder.apply(
      {**variables, "cache": cache}, token, train=False, mutable=["cache"]
    )
  )
  outs = []
  for t in range(T):
    out, updates = step(cache, tokens[:, t : t + 1])
    cache = updates["cache"]
    outs.append(out[:, 0])
  np.testing.assert_allclose(jnp.stack(outs, 1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mixer", ["involution", "attention"])
def test_greedy_generation_is_the_argmax_of_the_full_pass(mixer):
  model = _model(mixer)
  prompt = _tokens(seed=5, length=4)
  variables = model.init(jax.random.PRNGKey(6), prompt, train=False)
  run = jax.jit(
    lambda p, rng, temperature: generate(model, variables, p, 8, temperature=temperature, rng=rng),
    static_argnames="temperature",
  )
  tokens = run(prompt, jax.random.PRNGKey(0), 0.0)
  # One full pass over prompt + text: the model is causal (test_every_mixer_is_causal), so
  # position 3 + i sees exactly what generation had when it chose token i.
  sequence = jnp.concatenate([prompt, tokens], axis=1)
  logits = jax.jit(lambda s: model.apply(variables, s, train=False))(sequence)
  np.testing.assert_array_equal(tokens, jnp.argmax(logits[:, 3:-1], -1))
  a, b = run(prompt, jax.random.PRNGKey(1), 1.0), run(prompt, jax.random.PRNGKey(1), 1.0)
  c = run(prompt, jax.random.PRNGKey(2), 1.0)
  np.testing.assert_array_equal(a, b)  # the same seed, the same text
  assert not np.array_equal(a, c)
  # In pieces (as involution-generate makes long texts): the same tokens.
  state = jax.jit(lambda p: prefill(model, variables, p))(prompt)
  more = jax.jit(
    lambda state, offset, n: sample(
      model, variables, state, n, temperature=1.0, rng=jax.random.PRNGKey(1), offset=offset
    ),
    static_argnums=2,
  )
  pieces = []
  for offset, n in ((0, 3), (3, 5)):
    piece, state = more(state, offset, n)
    pieces.append(piece)
  np.testing.assert_array_equal(jnp.concatenate(pieces, axis=1), a)


def test_dynamic_conv_matches_the_formula_in_float64(x64):
  batch, length, width, heads, taps = 2, 9, 8, 2, 4
  x = np.random.default_rng(0).normal(size=(batch, length, width))
  layer = DynamicConv(kernel_size=taps, heads=heads)
  variables = layer.init(jax.random.PRNGKey(0), jnp.asarray(x), train=False)
  variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
  got = layer.apply(variables, jnp.asarray(x), train=False)
  w = np.asarray(variables["params"]["kernel"]["kernel"])  # (D, H * K)
  b = np.asarray(variables["params"]["kernel"]["bias"])
  want = np.zeros_like(x)
  per_head = width // heads
  for n in range(batch):
    for t in range(length):
      logits = (x[n, t] @ w + b).reshape(heads, taps)
      kernel = np.exp(logits - logits.max(-1, keepdims=True))
      kernel /= kernel.sum(-1, keepdims=True)
      for c in range(width):
        for k in range(taps):
          source = t - (taps - 1) + k
          if source >= 0:
            want[n, t, c] += kernel[c // per_head, k] * x[n, source, c]
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-12, atol=1e-12)


def test_bytes_round_trip_and_splits_are_contiguous():
  sample = "naïve café — 漢字 and plain ASCII\n"
  assert text.decode(text.encode(sample)) == sample
  assert text.encode(sample).dtype == np.uint8 and text.encode(sample).size == len(sample.encode())
  whole = text.encode(text.pydoc_text())
  parts = {
    s: text.load_text_dataset("pydoc", s, context=64, data_dir=None).source for s in text.SPLITS
  }
  joined = np.concatenate([parts[s].tokens for s in ("train", "validation", "test")])
  np.testing.assert_array_equal(joined, whole)
  assert parts["train"].corpus["sha256"] == parts["test"].corpus["sha256"]
  assert parts["train"].corpus["bytes"] == whole.size > 300_000
  # Evaluation: every target once, in order.
  evaluation = parts["test"]
  preprocess = text.TokenPreprocess(64)
  targets = [
    e["targets"][e["mask"] > 0]
    for e in (preprocess.eval(evaluation[i]) for i in range(len(evaluation)))
  ]
  np.testing.assert_array_equal(np.concatenate(targets), evaluation.tokens[1:])


def test_text_errors_are_clear(tmp_path):
  (tmp_path / "empty.txt").write_text("")
  with pytest.raises(ValueError, match="is empty"):
    text.load_text_dataset("textfile", "train", context=8, data_dir=str(tmp_path / "empty.txt"))
  (tmp_path / "short.txt").write_text("just a few words " * 10)
  with pytest.raises(ValueError, match="context 64 does not fit the 9-token validation split"):
    text.load_text_dataset(
      "textfile", "validation", context=64, data_dir=str(tmp_path / "short.txt")
    )
  (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
  with pytest.raises(ValueError, match="latin1.txt is not UTF-8 text"):
    text.load_text_dataset("textfile", "train", context=2, data_dir=str(tmp_path / "latin1.txt"))
  with pytest.raises(ValueError, match="needs data_dir"):
    text.load_text_dataset("textfile", "train", context=8, data_dir=None)
  with pytest.raises(ValueError, match="unknown mixer 'rnn'"):
    _model("rnn").init(jax.random.PRNGKey(0), _tokens(), train=False)
  with pytest.raises(ValueError, match="kernel_sizes must be one size >= 1 or 2"):
    _model("conv", kernel_sizes=(3, 5, 7)).init(jax.random.PRNGKey(0), _tokens(), train=False)


# A FIFO would block the reader forever and /dev/zero never ends: both are refused by name.
@pytest.mark.parametrize("special", ["fifo", "zero"])
def test_a_text_folder_with_a_special_file_is_refused_by_name(tmp_path, special):
  folder = tmp_path / "corpus"
  folder.mkdir()
  (folder / "a.txt").write_text("plain text " * 40)
  if special == "fifo":
    os.mkfifo(folder / "b.txt")
  else:
    os.symlink("/dev/zero", folder / "b.txt")
  message = f"{folder / 'b.txt'} is not a regular file (a FIFO, device or socket)"
  for data_dir in (folder, folder / "b.txt"):
    with pytest.raises(ValueError, match=re.escape(message)):
      text.load_text_dataset("textfile", "train", context=8, data_dir=str(data_dir))


# Over 20 s: trains 30 steps so that the loss must fall, then generates.
@pytest.mark.parametrize("mixer", MIXERS)
def test_a_few_steps_of_the_char_lm_lower_the_loss(mixer, tmp_path, monkeypatch, capsys):
  from involution_jax.training.trainer import train_and_evaluate

  config = load_config("charlm", mixer)
  tiny = dict(width=32, depth=2, kernel_sizes=(3, 7), heads=4, group_channels=8, dropout=0.0)
  config.model_kwargs.update(tiny)
  config.update(
    context=32,
    batch_size=16,
    eval_batch_size=64,
    num_train_steps=30,
    log_every_steps=10,
    checkpoint_every_steps=30,
    learning_rate=3e-3,
    warmup_epochs=0.0,
  )
  metrics = train_and_evaluate(config, str(tmp_path), mesh=one_device_mesh())
  from involution_jax.training import curves

  losses = [r["train"]["loss"] for r in curves.read(str(tmp_path)) if "train" in r]
  assert losses[-1] < 0.8 * losses[0], losses
  assert metrics["test_bits_per_byte"] < 8  # better than uniform over bytes
  assert metrics["corpus"]["name"] == "pydoc"
  if mixer in ("involution", "attention"):  # the command line, on the trained model
    from involution_jax.cli import generate as generate_tool

    prompt = "The with statement"
    sampled = generation.generate_text(str(tmp_path), prompt, 40, seed=3)
    monkeypatch.setattr(generation, "PIECE", 16)  # 16 + 16 + 8 bytes: the same text
    assert sampled == generation.generate_text(str(tmp_path), prompt, 40, seed=3)
    greedy = generation.generate_text(str(tmp_path), prompt, 40, temperature=0)
    capsys.readouterr()
    assert len(greedy.encode("utf-8", errors="surrogatepass")) >= 1
    flags = ["--prompt", prompt, "--length", "40", "--temperature", "0"]
    assert generate_tool.main([str(tmp_path), *flags]) == 0
    assert capsys.readouterr().out == prompt + greedy + "\n"
    with pytest.raises(ValueError, match="--prompt is empty"):
      generation.generate_text(str(tmp_path), "", 10)
    # Prediction continues a prompt, as generation does; the kernel pictures are refused.
    from involution_jax.cli import predict, visualize
    from involution_jax.inference.predictor import Predictor

    predictor = Predictor.load(str(tmp_path))
    [result] = predictor.predict_texts([prompt], length=40, temperature=0)
    assert result == {"text": prompt, "continuation": greedy}
    (tmp_path / "prompt.txt").write_text(prompt)
    assert predict.main([str(tmp_path), str(tmp_path / "prompt.txt"), "--json"]) == 0
    [printed] = json.loads(capsys.readouterr().out)
    assert printed["path"] == str(tmp_path / "prompt.txt") and printed["continuation"]
    image = os.path.join(ROOT, "docs", "digit7.png")
    out = str(tmp_path / "kernels.png")
    assert visualize.main(["--weights", str(tmp_path), "--image", image, "--out", out]) == 1
    assert "involution-visualize draws the kernels an image model" in capsys.readouterr().err


@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), -0.5])
def test_generate_refuses_a_temperature_that_is_not_a_finite_number(temperature):
  # Checked before anything loads: these weights do not exist.
  message = f"--temperature must be a finite number >= 0, got {temperature}"
  with pytest.raises(ValueError, match=re.escape(message)):
    generation.generate_text("/nonexistent/run", "x", 10, temperature=temperature)


# Over 20 s: writes a random RedNet checkpoint to refuse.
def test_generate_refuses_what_is_not_a_language_model(tmp_path, capsys):
  from helpers import save_random_checkpoint

  from involution_jax.cli import generate as generate_tool

  save_random_checkpoint(str(tmp_path / "digits"))
  assert generate_tool.main([str(tmp_path / "digits"), "--prompt", "x"]) == 1
  assert "holds a classification model, not a language model" in capsys.readouterr().err
