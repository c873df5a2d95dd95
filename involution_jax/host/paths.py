"""Output paths checked before anything is written: never over an input, never a silent
replacement; folders created and writable."""

from __future__ import annotations

import os
from collections.abc import Sequence


def refuse_over_inputs(outputs: str | Sequence[str], inputs: Sequence[str]) -> None:
  """A ValueError when writing one of `outputs` would replace one of `inputs` (the files or
  folders a command reads): the output is an input (links followed) or a folder holding one.
  """
  replaced = {}  # every input and every folder above one -> that input
  files = {}  # (device, inode) of every existing input -> that input: hard links too
  for source in inputs:
    path = os.path.realpath(source)
    while path not in replaced:
      replaced[path] = source
      path = os.path.dirname(path)
    if os.path.exists(source):
      status = os.stat(source)
      files[status.st_dev, status.st_ino] = source
  for out in [outputs] if isinstance(outputs, str) else outputs:
    source = replaced.get(os.path.realpath(out))
    if source is None and os.path.exists(out):
      status = os.stat(out)
      source = files.get((status.st_dev, status.st_ino))
    if source is not None:
      raise ValueError(f"output {out} would replace the input {source}; choose another output")


def output_folder(path: str, what: str) -> str:
  """`path` as a folder this process can write (created with its parents), else an
  OSError naming `what` and the problem."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise NotADirectoryError(f"{what} {path} is a file, expected a folder")
  os.makedirs(path, exist_ok=True)
  if not os.access(path, os.W_OK | os.X_OK):
    raise PermissionError(f"{what} {path} is not writable")
  return path


def output_file(
  path: str, overwrite: bool, inputs: Sequence[str] = (), default_suffix: str = ""
) -> str:
  """The path of a new file: `path`, with `default_suffix` added when it has no suffix (as
  the writer would add it, so the checks see the file that will be written). Its folder is
  created; an existing file is kept unless `overwrite`; never one of `inputs`."""
  if default_suffix and not os.path.splitext(path)[1].lstrip("."):
    path = path.rstrip(".") + default_suffix  # "curves." is written as curves.png too
  if os.path.isdir(path):
    raise IsADirectoryError(f"output {path} is a folder, expected a file name")
  refuse_over_inputs(path, inputs)
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f"output {path} exists; pass --overwrite to replace it")
  output_folder(os.path.dirname(os.path.abspath(path)), "output folder")
  return path
