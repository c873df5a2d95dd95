"""jax.export round trip: a symbolic batch, weights embedded, loadable with jax alone."""

import dataclasses
import subprocess
import sys

import jax
import numpy as np
from helpers import python_env, save_random_checkpoint

from involution_jax import portability
from involution_jax.cli import export as export_command
from involution_jax.inference import export


# Over 20 s: exports, then loads in a fresh interpreter with jax only.
def test_export_round_trip_matches_apply(tmp_path):
  model, variables, info = save_random_checkpoint(str(tmp_path / "ckpt"))
  out = str(tmp_path / "model.jaxexport")
  export_command.main([str(tmp_path / "ckpt"), out])
  call, metadata = export.load(out)
  assert metadata["image_size"] == 8 and metadata["class_names"][9] == "9"
  rng = np.random.default_rng(0)
  for batch in (1, 5):
    x = rng.normal(size=(batch, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(
      call(x), model.apply(variables, x, train=False), rtol=1e-5, atol=1e-5
    )
  # A fresh interpreter with jax only: the package is not importable there.
  script = f"""
import sys, numpy as np, jax
sys.modules["involution_jax"] = None  # make any import of the package fail
exported = jax.export.deserialize(bytearray(open({out!r}, "rb").read()))
x = np.random.default_rng(0).normal(size=(5, 8, 8, 3)).astype(np.float32)
np.save({str(tmp_path / "logits.npy")!r}, np.asarray(exported.call(x)))
"""
  env = python_env()
  env["PYTHONPATH"] = ""
  result = subprocess.run(
    [sys.executable, "-c", script],
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
    cwd=str(tmp_path),
  )
  assert result.returncode == 0, result.stderr[-2000:]
  x = np.random.default_rng(0).normal(size=(5, 8, 8, 3)).astype(np.float32)
  np.testing.assert_allclose(
    np.load(tmp_path / "logits.npy"), model.apply(variables, x, train=False), rtol=1e-5, atol=1e-5
  )


def test_exported_program_has_a_symbolic_batch(tmp_path):
  _, variables, info = save_random_checkpoint(str(tmp_path / "ckpt"))
  exported = export.export_model(variables, info)
  (spec,) = exported.in_avals
  assert str(spec.shape[0]) == "batch" and spec.shape[1:] == (8, 8, 3)
  assert exported.platforms == (jax.devices()[0].platform,)


# Over 20 s: lowers the model for three platforms.
def test_one_artifact_for_cpu_cuda_and_tpu_runs_here_and_records_its_platforms(tmp_path):
  model, variables, _ = save_random_checkpoint(str(tmp_path / "ckpt"))
  out = str(tmp_path / "model.jaxexport")
  assert export_command.main([str(tmp_path / "ckpt"), out, "--platforms", "cpu,cuda,tpu"]) == 0
  call, metadata = export.load(out)
  assert metadata["platforms"] == ["cpu", "cuda", "tpu"]
  x = np.random.default_rng(1).normal(size=(3, 8, 8, 3)).astype(np.float32)
  np.testing.assert_allclose(call(x), model.apply(variables, x, train=False), rtol=1e-5, atol=1e-5)


def test_export_of_a_pallas_model_uses_the_xla_path(tmp_path):
  _, variables, info = save_random_checkpoint(str(tmp_path / "ckpt"))
  pallas_info = dataclasses.replace(info, model_kwargs=dict(info.model_kwargs, method="pallas"))
  exported = export.export_model(variables, pallas_info, ["cuda"])
  assert exported.platforms == ("cuda",)
  assert portability.TRITON_CALL not in portability.custom_calls(exported.mlir_module())
  exported.serialize()  # Triton calls could not be serialised


def test_unknown_platform_is_one_line_before_any_work(tmp_path, capsys):
  assert (
    export_command.main(["/nonexistent/weights", str(tmp_path / "m"), "--platforms", "cpu,gpu"])
    == 1
  )
  err = capsys.readouterr().err.strip()
  assert (
    err == "involution-export: error: unknown platform 'gpu'; expected some of cpu, cuda, rocm, tpu"
  )
