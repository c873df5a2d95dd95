"""Outputs never over inputs: what a command writes is checked as the file it will be, and
never replaces a file or folder that the command reads, even with --overwrite."""

import os
import pathlib

import pytest
from helpers import save_random_checkpoint

from involution_jax.cli import convert, export, plot, predict, visualize
from involution_jax.host.paths import refuse_over_inputs
from involution_jax.training import curves
from involution_jax.weights import zoo


def _history(workdir):
  workdir.mkdir(parents=True, exist_ok=True)
  for step in (1, 2):
    curves.append(str(workdir), step, "train", {"loss": 1.0 / step, "learning_rate": 0.1})
  return workdir


def _last_error(capsys) -> str:
  return capsys.readouterr().err.strip().splitlines()[-1]


def test_a_picture_named_without_a_suffix_is_checked_as_the_png_written(tmp_path, capsys):
  run = _history(tmp_path / "run")
  picture = tmp_path / "curves.png"
  picture.write_bytes(b"an earlier figure")
  assert plot.main([str(run), "--out", str(tmp_path / "curves")]) == 1
  assert _last_error(capsys) == (
    f"involution-plot: error: output {picture} exists; pass --overwrite to replace it"
  )
  assert picture.read_bytes() == b"an earlier figure"
  assert plot.main([str(run), "--out", str(tmp_path / "curves.")]) == 1  # also curves.png
  assert _last_error(capsys).endswith(f"output {picture} exists; pass --overwrite to replace it")
  assert plot.main([str(run), "--out", str(tmp_path / "curves"), "--overwrite"]) == 0
  assert f"wrote {picture} " in capsys.readouterr().out
  assert picture.read_bytes().startswith(b"\x89PNG") and not (tmp_path / "curves").exists()


def test_visualize_checks_the_png_it_writes_and_never_draws_over_its_image(tmp_path, capsys):
  image = tmp_path / "digit.png"
  image.write_bytes(b"the input image")
  (tmp_path / "kernels.png").write_bytes(b"earlier kernels")
  common = ["--weights", str(tmp_path / "none"), "--image", str(image)]
  assert visualize.main([*common, "--out", str(tmp_path / "kernels")]) == 1
  assert _last_error(capsys).endswith(
    f"output {tmp_path / 'kernels.png'} exists; pass --overwrite to replace it"
  )
  for out in (image, tmp_path / "digit"):  # the suffix added is the image's own name
    assert visualize.main([*common, "--out", str(out), "--overwrite"]) == 1
    assert _last_error(capsys).endswith(
      f"output {image} would replace the input {image}; choose another output"
    )
  assert image.read_bytes() == b"the input image"


def test_plot_never_writes_over_a_history_it_reads(tmp_path, capsys):
  run = _history(tmp_path / "run")
  history = pathlib.Path(curves.history_path(str(run)))
  before = history.read_bytes()
  assert plot.main([str(run), "--out", str(history), "--overwrite"]) == 1
  assert "would replace the input" in _last_error(capsys)
  assert history.read_bytes() == before


def test_export_never_writes_over_the_weights_it_reads(tmp_path, capsys):
  weights = tmp_path / "model.pth"
  weights.write_bytes(b"official weights")
  assert export.main([str(weights), str(weights), "--overwrite"]) == 1
  assert _last_error(capsys) == (
    f"involution-export: error: output {weights} would replace the input {weights}; "
    "choose another output"
  )
  os.link(weights, tmp_path / "alias.pth")  # a hard link: the same file by another name
  assert export.main([str(weights), str(tmp_path / "alias.pth"), "--overwrite"]) == 1
  assert "would replace the input" in _last_error(capsys)
  assert weights.read_bytes() == b"official weights"


# A checkpoint written by a training run: its workdir, its checkpoint root, or a step.
def test_convert_never_replaces_the_checkpoint_it_reads(tmp_path, capsys):
  workdir = tmp_path / "run"
  save_random_checkpoint(str(workdir / "checkpoints"))
  root = workdir / "checkpoints"
  steps = sorted(os.listdir(root))
  for source, out in [
    (workdir, root),  # the workdir's steps, replaced by its own conversion
    (workdir, workdir),
    (root, root),
    (root / steps[0], root),
    (root / steps[0], workdir),
  ]:
    assert convert.main([str(source), str(out), "--overwrite"]) == 1, (source, out)
    assert "would replace the input" in _last_error(capsys)
    assert sorted(os.listdir(root)) == steps
  assert convert.main([str(workdir), str(tmp_path / "copy")]) == 0
  assert sorted(os.listdir(tmp_path / "copy")) == ["0"]


def test_convert_never_replaces_the_cached_file_of_the_pretrained_name_it_reads(
  tmp_path, capsys, monkeypatch
):
  monkeypatch.setenv("INVOLUTION_JAX_CACHE", str(tmp_path / "cache"))
  cached = pathlib.Path(zoo.cached_path("rednet26"))
  cached.parent.mkdir(parents=True)
  cached.write_bytes(b"weights")
  for out in (cached, cached.parent):
    assert convert.main(["rednet26", str(out), "--overwrite"]) == 1
    assert _last_error(capsys) == (
      f"involution-convert: error: output {out} would replace the input {cached}; choose "
      "another output"
    )
  assert cached.read_bytes() == b"weights"


def test_an_output_inside_an_input_folder_is_allowed_when_it_replaces_nothing_read(tmp_path):
  run = _history(tmp_path / "run")
  refuse_over_inputs(str(run / "curves.png"), [curves.history_path(str(run))])
  refuse_over_inputs(str(tmp_path / "run2"), [str(run)])  # a sibling, not the folder
  with pytest.raises(ValueError, match="would replace the input"):
    refuse_over_inputs(str(tmp_path), [curves.history_path(str(run))])


def _files(root, names):
  paths = [root / n for n in names]
  for p in paths:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"an image")
  return [str(p) for p in paths]


def test_prediction_drawings_never_replace_an_image_nor_each_other(tmp_path, capsys):
  files = _files(tmp_path, ["a/x.png", "b/x.png", "b/x.jpg", "b/y.png"])
  out = tmp_path / "drawn"
  assert predict.drawing_paths(files, str(out)) == [
    str(out / name) for name in ("a-x_png.png", "b-x_png.png", "b-x_jpg.png", "y.png")
  ]
  with pytest.raises(ValueError, match=f"output {tmp_path / 'b' / 'y.png'} would replace the"):
    predict.drawing_paths(files, str(tmp_path / "b"))  # y.png drawn over itself
  clash = _files(tmp_path / "c", ["a/x.png", "b/x.png", "a-x_png.jpg"])
  assert predict.drawing_paths(clash, str(out)) == [
    str(out / name) for name in ("a-x_png.png", "b-x_png.png", "a-x_png-2.png")
  ]
  twice = [files[3], str(tmp_path / "a" / ".." / "b" / "y.png")]  # one file, listed twice
  assert predict.drawing_paths(twice, str(out)) == [str(out / "y.png")] * 2
  # The command refuses before it loads a model (these weights do not exist).
  args = ["/nonexistent/weights", files[3], "--out-dir", str(tmp_path / "b")]
  assert predict.main(args) == 1
  assert _last_error(capsys).endswith(f"would replace the input {files[3]}; choose another output")
  assert (tmp_path / "b" / "y.png").read_bytes() == b"an image"
