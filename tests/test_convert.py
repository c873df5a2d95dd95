"""Weight conversion against a PyTorch re-creation of the official RedNet."""

import codecs
import os
import pickle
import re
import tracemalloc

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="weight conversion tests need the torch extra")

import helpers  # noqa: E402
from torch_rednet import Classifier, randomise_  # noqa: E402

from involution_jax import create_model  # noqa: E402
from involution_jax.cli import convert as convert_command  # noqa: E402
from involution_jax.weights import convert, mmcls, paddle  # noqa: E402

# The official checkpoints' keys and shapes (copied from shared/reference): the contract.
KEY_LISTS = os.path.join(os.path.dirname(__file__), "data")


def _official_keys(depth, kind="official"):
  path = os.path.join(KEY_LISTS, f"{kind}_keys_rednet{depth}.txt")
  return [tuple(line.split("\t")) for line in open(path).read().splitlines()]


def _images(batch=2, size=64, seed=0):
  return np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype(np.float32)


def _torch_logits(model, x):
  with torch.no_grad():
    return model(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()


def _flax_apply(depth, variables, x, train, **model_kwargs):
  model = create_model(f"rednet{depth}", **model_kwargs)
  fn = lambda v, x: model.apply(v, x, train=train, mutable=["batch_stats"] if train else False)
  return jax.jit(fn)(variables, x)


@pytest.fixture(scope="module", params=[26, 50])
def official(request):
  """(depth, randomised torch model in eval mode, a copy of its state dict)."""
  model = randomise_(Classifier(request.param), seed=request.param).eval()
  state = {k: v.clone() for k, v in model.state_dict().items()}
  return request.param, model, state


@pytest.mark.parametrize("depth", [26, 50])
def test_torch_recreation_has_the_official_keys(depth):
  ours = [(k, str(tuple(v.shape))) for k, v in Classifier(depth).state_dict().items()]
  assert ours == _official_keys(depth)


def test_eval_logits_match_float32(official):
  depth, model, state = official
  x = _images()
  variables = convert.from_torch_state_dict(state)
  np.testing.assert_allclose(
    _flax_apply(depth, variables, x, train=False), _torch_logits(model, x), rtol=1e-4, atol=1e-4
  )


# Over 20 s: RedNet-26/50 in float64 and float32, forward in train mode, in JAX and PyTorch.
def test_train_mode_forward_and_statistics_match(official):
  depth, _, state = official
  x = _images(batch=4)
  # Exactness in float64: outputs and updated running statistics.
  model = Classifier(depth).double().train()
  model.load_state_dict(state)
  with torch.no_grad():
    want = model(torch.from_numpy(x).double().permute(0, 3, 1, 2)).numpy()
  with jax.enable_x64(True):
    variables = jax.tree.map(
      lambda a: jnp.asarray(a, jnp.float64), convert.from_torch_state_dict(state)
    )
    got, updates = _flax_apply(
      depth, variables, x.astype(np.float64), train=True, param_dtype=jnp.float64
    )
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-8)
    updated = convert.to_torch_state_dict({"params": variables["params"], **updates})
  for key, value in model.state_dict().items():
    if "running" in key:
      np.testing.assert_allclose(updated[key].numpy(), value.numpy(), rtol=1e-8, atol=1e-10)
  # In float32, train-mode BatchNorm on small batches amplifies rounding; ours
  # stays as close to the float64 result as PyTorch's own float32 model.
  got32, _ = _flax_apply(depth, convert.from_torch_state_dict(state), x, train=True)
  model.float().load_state_dict(state)
  torch32 = _torch_logits(model.train(), x)
  assert np.abs(got32 - want).max() <= 2 * np.abs(torch32 - want).max() + 1e-5


def test_round_trip_is_exact_and_loads_strictly(official):
  depth, model, state = official
  variables = convert.from_torch_state_dict(state)
  back = convert.to_torch_state_dict(variables, num_batches_tracked=7)
  assert set(back) == set(state)
  for key, value in state.items():
    if key.endswith("num_batches_tracked"):
      assert int(back[key]) == 7
    else:
      assert back[key].dtype == value.dtype and torch.equal(back[key], value), key
  fresh = Classifier(depth).eval()
  fresh.load_state_dict(back, strict=True)
  x = _images(seed=1)
  np.testing.assert_array_equal(_torch_logits(fresh, x), _torch_logits(model, x))


def test_checkpoint_wrapper_prefixes_and_inference(official):
  depth, _, state = official
  wrapped = {"meta": {"epoch": 1}, "state_dict": {f"module.{k}": v for k, v in state.items()}}
  assert mmcls.infer_model_config(wrapped) == dict(
    depth=depth, stem_kernel_size=3, num_classes=1000
  )
  a = convert.from_torch_state_dict(wrapped)
  b = convert.from_torch_state_dict(state, depth=depth)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  with pytest.raises(ValueError, match=f"depth=101 given, but the state dict is RedNet-{depth}"):
    convert.from_torch_state_dict(state, depth=101)


def test_stem_kernel_seven_and_headless_are_inferred():
  model = randomise_(Classifier(26, num_classes=10, stem_kernel_size=7)).eval()
  state = model.state_dict()
  assert mmcls.infer_model_config(state) == dict(depth=26, stem_kernel_size=7, num_classes=10)
  variables = convert.from_torch_state_dict(state)
  x = _images()
  np.testing.assert_allclose(
    _flax_apply(26, variables, x, train=False, stem_kernel_size=7, num_classes=10),
    _torch_logits(model, x),
    rtol=1e-4,
    atol=1e-4,
  )
  headless = {k: v for k, v in state.items() if not k.startswith("head.")}
  assert mmcls.infer_model_config(headless)["num_classes"] == 0
  assert "fc" not in convert.from_torch_state_dict(headless)["params"]


def test_corrupted_state_dicts_list_every_problem(official):
  _, _, state = official
  broken = dict(state)
  del broken["backbone.layer1.0.conv2.conv1.conv.weight"]
  del broken["head.fc.bias"]
  broken["backbone.extra.weight"] = torch.zeros(3)
  broken["backbone.stem.0.bn.weight"] = torch.zeros(31)
  with pytest.raises(ValueError) as info:
    convert.from_torch_state_dict(broken)
  message = str(info.value)
  for expected in (
    "missing keys (2)",
    "backbone.layer1.0.conv2.conv1.conv.weight",
    "head.fc.bias",
    "unexpected keys (1)",
    "backbone.extra.weight",
    "wrongly shaped keys (1)",
    "backbone.stem.0.bn.weight: got (31,), expected (32,)",
  ):
    assert expected in message
  with pytest.raises(ValueError, match="cannot infer the RedNet depth"):
    convert.from_torch_state_dict({k: v for k, v in state.items() if "layer3" not in k})


@pytest.mark.parametrize("protocol", [2, 4])
def test_pdparams_load_without_paddle(official, tmp_path, protocol):
  depth, model, state = official
  paddle_state = helpers.paddle_state(state)
  if depth == 26:
    assert sorted(
      (k, str(v.shape)) for k, v in paddle_state.items() if isinstance(v, np.ndarray)
    ) == sorted(_official_keys(26, "paddle"))
  path = tmp_path / f"rednet{depth}.pdparams"
  path.write_bytes(pickle.dumps(paddle_state, protocol=protocol))
  variables = convert.from_paddle_state_dict(paddle.load_pdparams(str(path)))
  x = _images()
  np.testing.assert_allclose(
    _flax_apply(depth, variables, x, train=False), _torch_logits(model, x), rtol=1e-4, atol=1e-4
  )
  del paddle_state["layer1.0.bn1._mean"]
  with pytest.raises(ValueError, match=r"missing keys \(1\):\n  layer1.0.bn1._mean"):
    convert.from_paddle_state_dict(paddle_state)


class _Exploit:
  def __reduce__(self):
    return (os.system, ("echo should-never-run > /dev/null",))


def test_pdparams_with_non_numpy_globals_is_refused(tmp_path):
  path = tmp_path / "evil.pdparams"
  path.write_bytes(pickle.dumps({"fc.weight": np.zeros(2), "payload": _Exploit()}))
  with pytest.raises(paddle.UnsafePickleError, match=r"refusing to load global (posix|os)\.system"):
    paddle.load_pdparams(str(path))
  garbage = tmp_path / "garbage.pdparams"
  garbage.write_bytes(b"not a pickle")
  with pytest.raises(ValueError, match="not a readable .pdparams pickle"):
    paddle.load_pdparams(str(garbage))


class _Forged:
  """Pickles as numpy pickles an array, from `args` and `state` of one's choosing."""

  def __init__(self, args, state):
    self.args, self.state = args, state

  def __reduce__(self):
    return (np._core.multiarray._reconstruct, self.args, self.state)


class _EditedDtype:
  def __reduce__(self):
    return (
      np.dtype,
      ("V8", False, True),
      (3, "|", None, ("a",), {"a": (np.dtype("O"), 0)}, 8, 1, 0),
    )


class _Encoded:
  def __init__(self, text, encoding="latin1"):
    self.text, self.encoding = text, encoding

  def __reduce__(self):
    return (codecs.encode, (self.text, self.encoding))


def test_pdparams_arrays_must_be_plain_numbers_the_file_holds(tmp_path):
  path = tmp_path / "w.pdparams"
  weights = {"fc.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "step": np.int64(7)}
  path.write_bytes(pickle.dumps({**weights, paddle.EXTRA_KEY: {"a": "b"}}, protocol=2))
  loaded = paddle.load_pdparams(str(path))
  assert type(loaded["fc.weight"]) is np.ndarray and loaded["fc.weight"].dtype == np.float32
  np.testing.assert_array_equal(loaded["fc.weight"], weights["fc.weight"])
  assert loaded["step"] == 7 and loaded[paddle.EXTRA_KEY] == {"a": "b"}

  plain = (np.ndarray, (0,), b"b")
  forged = {  # a few bytes each; refused before numpy allocates what they declare
    "of dtype object: a weights file holds numbers": np.array([1, "a"], dtype=object),
    "declares 1000000000 x float32 (4000000000 bytes) but holds 12 bytes": _Forged(
      plain, (1, (10**9,), np.dtype(np.float32), False, bytes(12))
    ),
    "made otherwise than numpy pickles arrays": _Forged(
      (np.ndarray, (10**10,), b"b"), (1, (1,), np.dtype(np.uint8), False, b"x")
    ),
    "shape (-1,)": _Forged(plain, (1, (-1,), np.dtype(np.uint8), False, b"x")),
  }
  # A dtype whose state a pickle edited (a field of Python objects, at an offset it chose).
  edited = _Forged(plain, (1, (1,), _EditedDtype(), False, b"A" * 8))
  forged["of dtype [('a', 'O')]: a weights file holds numbers"] = edited
  # Bytes that grow as they are made: a codec other than latin1, one string encoded often.
  forged["refusing _codecs.encode(..., 'hex')"] = _Encoded("ab" * 8, "hex")
  text = "x" * 1000
  forged["the file makes more bytes than it could hold"] = [_Encoded(text) for _ in range(100)]
  tracemalloc.start()
  for message, value in forged.items():
    path.write_bytes(pickle.dumps({"x": value}, protocol=2))
    with pytest.raises(paddle.UnsafePickleError, match=re.escape(message)):
      paddle.load_pdparams(str(path))
  peak = tracemalloc.get_traced_memory()[1]
  tracemalloc.stop()
  assert peak < 10 * 2**20, peak


def test_cli_writes_a_checkpoint_that_loads(official, tmp_path, capsys):
  from involution_jax.weights import checkpoints

  depth, _, state = official
  weights = tmp_path / f"rednet{depth}.pth"
  torch.save({"meta": {}, "state_dict": state}, weights)
  convert_command.main([str(weights), str(tmp_path / "out")])
  assert f"rednet{depth} (1000 classes)" in capsys.readouterr().out
  variables, info = checkpoints.load_for_inference(str(tmp_path / "out"))
  assert info.model == f"rednet{depth}" and len(info.class_names) == 1000
  assert info.image_size == 224 and info.eval_crop == 0.875
  jax.tree.map(np.testing.assert_array_equal, variables, convert.from_torch_state_dict(state))
  pdparams = tmp_path / "paddle.pdparams"
  pdparams.write_bytes(pickle.dumps(helpers.paddle_state(state), protocol=4))
  from_paddle, config = convert.load_official(str(pdparams))
  assert config == dict(depth=depth, stem_kernel_size=3, num_classes=1000)
  jax.tree.map(np.testing.assert_array_equal, variables, from_paddle)
  with pytest.raises(FileNotFoundError, match="weights file not found"):
    convert.load_official(str(tmp_path / "missing.pth"))


def test_checkpoints_out_to_torch_and_safetensors_round_trip(official, tmp_path, capsys):
  """Official .pth -> orbax -> .pth / .safetensors: each loads strictly into the official
  model with the original values, and back into the same Flax variables."""
  safetensors_torch = pytest.importorskip("safetensors.torch")
  depth, model, state = official
  torch.save(state, tmp_path / "in.pth")
  assert convert_command.main([str(tmp_path / "in.pth"), str(tmp_path / "ckpt")]) == 0
  variables = convert.load_weights(str(tmp_path / "ckpt"))[0]
  out_pth, out_st = tmp_path / "out.pth", tmp_path / "out.safetensors"
  assert convert_command.main([str(tmp_path / "ckpt"), str(out_pth)]) == 0
  assert "(torch)" in capsys.readouterr().out
  assert convert_command.main([str(tmp_path / "ckpt"), str(out_st), "--format", "safetensors"]) == 0
  for loaded in (torch.load(out_pth, weights_only=True), safetensors_torch.load_file(out_st)):
    assert sorted(loaded) == sorted(state)
    for key, value in state.items():  # num_batches_tracked: not kept by Flax, written as 0
      want = torch.zeros_like(value) if key.endswith("num_batches_tracked") else value
      torch.testing.assert_close(loaded[key], want, rtol=0, atol=0)
    Classifier(depth).load_state_dict(loaded, strict=True)
  for path in (out_pth, out_st):
    back, config = convert.load_official(str(path))
    assert config == dict(depth=depth, stem_kernel_size=3, num_classes=1000)
    jax.tree.map(np.testing.assert_array_equal, back, variables)
  assert convert_command.main([str(tmp_path / "ckpt"), str(out_st)]) == 1  # exists: kept
  assert "pass --overwrite" in capsys.readouterr().err


# Over 20 s: a checkpoint written and read back through orbax three times.
def test_only_the_official_architecture_leaves_in_the_official_layout(tmp_path, capsys):
  helpers.save_random_checkpoint(str(tmp_path / "digits"))  # RedNet with a small stem and K
  assert convert_command.main([str(tmp_path / "digits"), str(tmp_path / "d.pth")]) == 1
  err = capsys.readouterr().err
  assert "differs from the official architecture" in err and err.count("\n") == 1
  assert not (tmp_path / "d.pth").exists()
  assert (
    convert_command.main([str(tmp_path / "digits"), str(tmp_path / "x"), "--format", "onnx"]) == 1
  )
  assert "--format 'onnx': expected one of orbax, torch, safetensors" in capsys.readouterr().err
  # orbax -> orbax: the inference variables only, loadable as before.
  assert convert_command.main([str(tmp_path / "digits"), str(tmp_path / "copy")]) == 0
  jax.tree.map(
    np.testing.assert_array_equal,
    convert.load_weights(str(tmp_path / "copy"))[0],
    convert.load_weights(str(tmp_path / "digits"))[0],
  )
