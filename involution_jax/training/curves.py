"""A run's history (`workdir/history.jsonl`) and its curves (`workdir/curves.png`).

The trainer appends one JSON line per logging step ({"step", "train": {loss,
learning_rate, ...}}) and per evaluation ({"step", "eval": {metric: value}});
on resume, lines after the resumed step are dropped (a run resumed from an
earlier step after divergence draws the path it took). `draw` plots one or
several runs: train loss, each evaluation metric and the learning rate against
the step (`involution-plot` compares runs).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence

import matplotlib
from matplotlib.figure import Figure

HISTORY = "history.jsonl"
CURVES = "curves.png"


def history_path(workdir: str) -> str:
  return os.path.join(workdir, HISTORY)


def read(workdir: str) -> list[dict]:
  """The run's records, oldest first; a torn last line (a killed run) is skipped.

  Raises FileNotFoundError naming the workdir when it has no history.
  """
  path = history_path(workdir)
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f"{workdir} has no {HISTORY} (not a training workdir, or trained before curves existed)"
    )
  records = []
  with open(path) as f:
    for line in f:
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:
        continue
  return records


def keep_until(workdir: str, step: int) -> None:
  """Drops the records after `step` (resuming there); no history is no-op."""
  path = history_path(workdir)
  if not os.path.isfile(path):
    return
  kept = [r for r in read(workdir) if r["step"] <= step]
  tmp = f"{path}.tmp-{os.getpid()}"
  with open(tmp, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in kept)
  os.replace(tmp, path)


def recorded(workdir: str, kind: str, step: int) -> dict | None:
  """The values of the last `kind` ("train" or "eval") record at `step`; None when there
  is none (or no history)."""
  if not os.path.isfile(history_path(workdir)):
    return None
  found = [r[kind] for r in read(workdir) if r["step"] == step and kind in r]
  return found[-1] if found else None


def _scalars(values: Mapping) -> dict:
  return {
    k: float(v)
    for k, v in values.items()
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
  }


def append(workdir: str, step: int, kind: str, values: Mapping) -> None:
  """Adds one record: `kind` "train" or "eval", the finite scalars of `values`."""
  with open(history_path(workdir), "a") as f:
    f.write(json.dumps({"step": int(step), kind: _scalars(values)}) + "\n")


def _series(records: Sequence[dict], kind: str) -> dict[str, tuple[list, list]]:
  out: dict[str, tuple[list, list]] = {}
  for record in records:
    for name, value in record.get(kind, {}).items():
      steps, values = out.setdefault(name, ([], []))
      steps.append(record["step"])
      values.append(value)
  return out


# Evaluation results that are bookkeeping, not metrics.
_NOT_METRICS = {"unreadable", "count", "examples", "loss"}
# (title, [(kind, the series: a set of names, or None for every evaluation metric)])
_PANELS = [
  ("loss", [("train", {"loss"}), ("eval", {"loss"})]),
  ("evaluation", [("eval", None)]),
  ("learning rate", [("train", {"learning_rate"})]),
]


def draw(runs: Mapping[str, Sequence[dict]], out: str, title: str | None = None) -> str:
  """Plots `runs` ({label: records}) into the PNG `out`; returns `out`.

  Panels against the step: train (solid) and evaluation (dashed) loss, the
  evaluation metrics (a line style per metric), the learning rate; a colour
  per run.
  """
  figure = Figure(figsize=(15, 4.2), layout="constrained")
  axes = figure.subplots(1, len(_PANELS))
  colours = matplotlib.colormaps["tab10"]
  styles = ["-", "--", ":", "-."]
  for ax, (name, wanted) in zip(axes, _PANELS):
    for i, (label, records) in enumerate(runs.items()):
      j = 0
      for kind, only in wanted:
        series = _series(records, kind)
        for metric in sorted(only & set(series) if only else set(series) - _NOT_METRICS):
          steps, values = series[metric]
          if only is None:
            line = f"{label}: {metric}"
          else:
            line = f"{label}: {kind}" if len(wanted) > 1 else label
          ax.plot(
            steps,
            values,
            styles[j % len(styles)],
            color=colours(i % 10),
            marker="o" if kind == "eval" and len(steps) < 30 else None,
            markersize=3,
            label=line,
          )
          j += 1
    ax.set_title(name)
    ax.set_xlabel("step")
    if ax.lines:
      ax.legend(fontsize="small")
    else:
      ax.text(0.5, 0.5, "no records", ha="center", va="center", transform=ax.transAxes)
    ax.grid(alpha=0.3)
  if title:
    figure.suptitle(title)
  figure.savefig(out, dpi=110)
  return out
