"""Run histories, their curves, involution-plot, and the progress bars' on/off rule."""

import io

import matplotlib.axes
import numpy as np
import pytest
from PIL import Image

from involution_jax.cli import plot
from involution_jax.host.console import progress
from involution_jax.training import curves


def _run(workdir, steps, scale=1.0):
  workdir.mkdir(parents=True, exist_ok=True)
  for step in steps:
    lr = 0.1 * step / steps[-1]
    curves.append(str(workdir), step, "train", {"loss": scale / step, "learning_rate": lr})
  curves.append(
    str(workdir), steps[-1], "eval", {"accuracy": 0.9, "loss": 0.3, "count": 360, "note": "x"}
  )
  return workdir


def test_history_keeps_finite_scalars_and_survives_a_torn_line(tmp_path):
  _run(tmp_path, [1, 2])
  curves.append(str(tmp_path), 3, "train", {"loss": float("nan"), "ok": True, "n": 3})
  with open(curves.history_path(str(tmp_path)), "a") as f:
    f.write('{"step": 4, "tra')  # a run killed mid-write
  records = curves.read(str(tmp_path))
  assert [r["step"] for r in records] == [1, 2, 2, 3]
  assert records[2]["eval"] == {"accuracy": 0.9, "loss": 0.3, "count": 360.0}
  assert records[3]["train"] == {"n": 3.0}  # NaN, booleans and strings left out


def test_resuming_drops_what_came_after_the_resumed_step(tmp_path):
  _run(tmp_path, [1, 2, 3, 4])
  curves.keep_until(str(tmp_path), 2)
  assert [r["step"] for r in curves.read(str(tmp_path))] == [1, 2]
  curves.keep_until(str(tmp_path / "none"), 2)  # no history yet: nothing to do


def _pixels(path):
  with Image.open(path) as picture:
    assert picture.format == "PNG"
    return np.asarray(picture.convert("RGB"))


def test_plot_draws_several_runs_on_one_figure(tmp_path, capsys):
  a, b = _run(tmp_path / "a" / "run", [1, 2, 3]), _run(tmp_path / "b" / "run", [1, 2, 3], 2.0)
  out = tmp_path / "both.png"
  assert plot.main([str(a), str(b), "--out", str(out), "--title", "ablation"]) == 0
  assert "(2 runs)" in capsys.readouterr().out
  both = _pixels(out)
  assert plot.main([str(a), "--out", str(tmp_path / "one.png")]) == 0
  one = _pixels(tmp_path / "one.png")
  colours = lambda image: {tuple(c) for c in image.reshape(-1, 3)[::7]}
  assert len(colours(both)) > len(colours(one))  # the second run's colour is there
  assert plot.main([str(a), "--out", str(out)]) == 1  # exists
  assert "pass --overwrite" in capsys.readouterr().err


def test_plot_refuses_a_folder_without_history_in_one_line(tmp_path, capsys):
  assert plot.main([str(tmp_path), "--out", str(tmp_path / "x.png")]) == 1
  err = capsys.readouterr().err
  assert f"{tmp_path} has no history.jsonl" in err and err.count("\n") == 1
  assert not (tmp_path / "x.png").exists()


def test_an_empty_panel_says_so(tmp_path, monkeypatch):
  """A run with only a training loss: the evaluation and learning-rate panels say
  "no records" at their centre; the loss panel draws its line and says nothing."""
  written = []
  text = matplotlib.axes.Axes.text
  monkeypatch.setattr(
    matplotlib.axes.Axes,
    "text",
    lambda ax, *args, **kwargs: written.append((ax.get_title(), args)) or text(ax, *args, **kwargs),
  )
  (tmp_path / "r").mkdir()
  curves.append(str(tmp_path / "r"), 1, "train", {"loss": 1.0})
  curves.draw({"r": curves.read(str(tmp_path / "r"))}, str(tmp_path / "c.png"))
  assert written == [
    ("evaluation", (0.5, 0.5, "no records")),
    ("learning rate", (0.5, 0.5, "no records")),
  ]
  assert _pixels(tmp_path / "c.png").shape[1] > 1000


class _Terminal(io.StringIO):
  def isatty(self):
    return True


@pytest.mark.parametrize(
  "terminal, quiet, shown", [(True, False, True), (True, True, False), (False, False, False)]
)
def test_progress_bars_show_only_on_a_terminal_and_not_when_quiet(
  monkeypatch, terminal, quiet, shown
):
  stream = _Terminal() if terminal else io.StringIO()
  monkeypatch.setattr("sys.stderr", stream)
  assert list(progress(range(3), desc="work", quiet=quiet)) == [0, 1, 2]
  assert ("work" in stream.getvalue()) == shown
