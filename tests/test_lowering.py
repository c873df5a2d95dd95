"""What we ship lowers for TPU and GPUs, proven on this CPU-only machine.

Every program is lowered (not compiled, nothing allocated: abstract inputs) for
platforms this machine does not have, on the simulated 8-device mesh, and its
StableHLO is checked for what the target cannot run (`portability.py`): host
callbacks, custom calls other than the allowed ones, host transfers, float64
on TPU. The checker itself is shown to catch each of those.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import load_config, one_device_mesh, tiny_digits_config

from involution_jax import involution, portability
from involution_jax.cli import train
from involution_jax.training import preflight

ACCELERATORS = ("tpu", "cuda", "rocm")
MISSING = "/nonexistent/involution-jax-data"  # data that is not on this machine


def _lowers_everywhere(config, platforms=ACCELERATORS):
  report = preflight.dry_run(config, target_platforms=platforms)
  assert report["platforms"] == platforms
  assert report["train_step"] == report["eval_step"] == "lowered"
  return report


# Over 20 s: lowers RedNet-50's training and evaluation for GPU and TPU.
@pytest.mark.parametrize("half_precision", [False, True], ids=["float32", "bfloat16"])
def test_rednet50_training_and_evaluation_lower_for_accelerators(half_precision):
  # The published recipe: batch 2048 (256 per device on the 8 simulated devices), SGD.
  config = load_config(
    "imagenet", "rednet50", dataset="folder", data_dir=MISSING, half_precision=half_precision
  )
  config.batch_size = config.eval_batch_size = 2048
  report = _lowers_everywhere(config, ACCELERATORS if half_precision else ("tpu", "cuda"))
  assert report["devices"] == 8 and report["per_device_batch"] == 256
  assert report["parameters"] == 15_540_806  # RedNet-50, 1000 classes (config.num_classes)
  assert report["data"].startswith("NOT CHECKED: dataset folder not found")


# Over 20 s: lowers a full-size dense model's training step for GPU and TPU.
@pytest.mark.parametrize("name", ["coco_retinanet_red50", "cityscapes_fpn_red50"])
def test_dense_models_lower_for_accelerators(name):
  config = load_config(name, data_dir=MISSING)
  config.batch_size = config.eval_batch_size = 8
  _lowers_everywhere(config, ("tpu", "cuda"))


@pytest.mark.parametrize("name", ["digitscenes_det", "digitscenes_seg"])
def test_digit_scene_models_lower_with_their_data_checked(name):
  report = _lowers_everywhere(load_config(name), ("tpu",))
  assert "training examples" in report["data"] and "image (" in report["data"]


def _op_gradient(method, padding="SAME"):
  """x, kernel -> d/d(x, kernel) of a loss through the op (its three partials)."""

  def loss(x, kernel):
    return jnp.sum(jnp.sin(involution(x, kernel, padding=padding, method=method)))

  return jax.jit(jax.grad(loss, argnums=(0, 1)))


OP_CASES = {  # (x shape, kernel shape, padding)
  "1d-causal": ((2, 32, 16), (2, 32, 2, 5), "CAUSAL"),
  "2d": ((2, 16, 16, 16), (2, 16, 16, 2, 7, 7), "SAME"),
  "3d": ((1, 6, 8, 8, 8), (1, 6, 8, 8, 2, 3, 3, 3), "SAME"),
}
METHODS = {"tpu": ("shift", "patches"), "cuda": ("shift", "patches", "pallas")}
METHODS["rocm"] = METHODS["cuda"]


@pytest.mark.parametrize("case", OP_CASES)
@pytest.mark.parametrize("platform", ACCELERATORS)
def test_op_and_its_gradients_lower_with_every_method_the_platform_allows(platform, case):
  x_shape, k_shape, padding = OP_CASES[case]
  args = (jax.ShapeDtypeStruct(x_shape, jnp.bfloat16), jax.ShapeDtypeStruct(k_shape, jnp.bfloat16))
  for method in METHODS[platform]:
    if method == "pallas" and case != "2d":
      continue  # the Pallas kernels are 2-D (dispatch refuses the rest with a clear error)
    lowered = portability.lower_for(_op_gradient(method, padding), args, platform)
    calls = portability.custom_calls(lowered.as_text())
    assert calls == ({portability.TRITON_CALL} if method == "pallas" else set()), method


def test_pallas_is_refused_for_tpu_with_the_reason():
  args = [jax.ShapeDtypeStruct(s, jnp.float32) for s in OP_CASES["2d"][:2]]
  with pytest.raises(portability.PortabilityError, match="does not lower for tpu.*targets GPUs"):
    portability.lower_for(_op_gradient("pallas"), args, "tpu")


# --- the checker catches what a target cannot run ----------------------------------------

X = jax.ShapeDtypeStruct((4, 8), jnp.float32)


def _with_host_callback(x):
  return jax.pure_callback(np.tanh, jax.ShapeDtypeStruct(x.shape, x.dtype), x) + 1


def test_checker_passes_the_same_function_without_the_construct():
  for platform in portability.PLATFORMS:
    portability.lower_for(jax.jit(lambda x: jnp.tanh(x) + 1), [X], platform)


@pytest.mark.parametrize("platform", ["cpu", "tpu", "cuda"])
def test_checker_fails_on_a_host_callback(platform):
  # For this machine's CPU it lowers to a callback custom call; for the others, not at all.
  with pytest.raises(portability.PortabilityError, match=platform) as error:
    portability.lower_for(jax.jit(_with_host_callback), [X], platform)
  if platform == "cpu":
    assert "host callback" in str(error.value)


def test_checker_fails_on_a_foreign_custom_call():
  def cpu_only_kernel(x):
    return jax.ffi.ffi_call("my_cpu_only_kernel", jax.ShapeDtypeStruct(x.shape, x.dtype))(x)

  with pytest.raises(portability.PortabilityError, match="custom call @my_cpu_only_kernel"):
    portability.lower_for(jax.jit(cpu_only_kernel), [X], "tpu")


def test_checker_fails_on_float64_for_tpu_only(x64):
  f = jax.jit(lambda x: x * 2)
  x = jax.ShapeDtypeStruct((4,), jnp.float64)
  portability.lower_for(f, [x], "cuda")
  with pytest.raises(portability.PortabilityError, match="float64"):
    portability.lower_for(f, [x], "tpu")


def test_unknown_platform_is_named():
  with pytest.raises(ValueError, match="unknown platform 'gpu'; expected some of cpu, cuda"):
    portability.lower_for(jax.jit(jnp.tanh), [X], "gpu")


# --- the dry run on this machine ------------------------------------------------------------


def test_dry_run_compiles_and_reports_plausible_memory():
  config = tiny_digits_config()
  report = preflight.dry_run(config)
  assert report["platforms"] == ("cpu",) and report["per_device_batch"] == config.batch_size // 8
  memory = report["train_step"]
  # Each device holds the parameters and SGD's momentum (float32), and its slice of the batch.
  batch_bytes = (config.batch_size // 8) * config.image_size**2 * 3 * 4
  assert memory["arguments"] >= 2 * 4 * report["parameters"] + batch_bytes
  assert 0 < memory["aliased"] <= memory["outputs"]  # the donated state is updated in place
  assert memory["temporaries"] > 0 and report["eval_step"]["arguments"] > 0


def test_dry_run_on_one_cpu_device_judges_the_native_1d_loops_it_would_run():
  config = load_config("charlm", "involution", context=16, batch_size=8, eval_batch_size=8)
  config.model_kwargs.update(width=16, depth=1, kernel_sizes=(3,), heads=2, group_channels=8)
  report = preflight.dry_run(config, mesh=one_device_mesh())
  assert report["devices"] == 1 and report["train_step"]["arguments"] > 0


def test_dry_run_checks_the_class_count_against_the_data():
  config = tiny_digits_config()
  config.num_classes = 11
  with pytest.raises(ValueError, match="num_classes=11, but digits has 10 classes"):
    preflight.dry_run(config, target_platforms=["tpu"])


def test_dry_run_without_data_needs_the_class_count():
  config = load_config("default", dataset="folder", data_dir=MISSING)
  with pytest.raises(ValueError, match="dry run: the data dataset folder not found"):
    preflight.dry_run(config, target_platforms=["tpu"])


def test_dry_run_checks_that_init_from_names_weights(tmp_path):
  config = tiny_digits_config(init_from=str(tmp_path / "no_such_run"))
  with pytest.raises(FileNotFoundError, match="init_from=.*no_such_run: no such file or folder"):
    preflight.dry_run(config, target_platforms=["tpu"])
  config.init_from = str(tmp_path)  # a folder, but no checkpoint in it
  with pytest.raises(FileNotFoundError, match="no checkpoint found at"):
    preflight.dry_run(config, target_platforms=["tpu"])
  config.init_from = "rednet26"  # a pretrained name: fetched when training starts
  assert preflight.dry_run(config, target_platforms=["tpu"])["init_from"].startswith(
    "pretrained rednet26"
  )


# Over 20 s: the dry run compiles the train and evaluation steps to report their memory.
def test_train_dry_run_prints_the_report_and_trains_nothing(tmp_path, capsys):
  workdir = tmp_path / "run"
  flags = ["--config.image_size=8", "--config.batch_size=16", "--config.eval_batch_size=16"]
  assert train.main(["--dry_run", "--workdir", str(workdir), *flags]) == 0
  out = capsys.readouterr().out
  assert "batch: 16 global, 2 per device" in out and "data: 1437 training examples" in out
  assert "init_from: none (initialised at random)" in out
  assert re.search(r"train_step: compiled for cpu; per device: arguments [\d.]+ MiB", out)
  assert not workdir.exists()
  assert train.main(["--dry_run", "--target_platform", "tpu,rocm", *flags]) == 0
  assert "train_step: lowered for tpu, rocm" in capsys.readouterr().out


def test_target_platform_mistakes_are_one_line(capsys):
  assert train.main(["--target_platform", "tpu"]) == 1
  assert train.main(["--dry_run", "--target_platform", "tpu,v5e"]) == 1
  assert capsys.readouterr().err.splitlines() == [
    "involution-train: error: --target_platform goes with --dry_run "
    "(training runs on this machine)",
    "involution-train: error: unknown platform 'v5e'; expected some of cpu, cuda, rocm, tpu",
  ]
