"""Console output: progress bars on a terminal only, errors on one line."""

from __future__ import annotations

import sys

from tqdm import tqdm


def stderr_is_terminal() -> bool:
  """Whether progress bars can be drawn (stderr is a terminal, not a log file)."""
  return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def progress(iterable=None, *, quiet: bool = False, **kwargs) -> tqdm:
  """A tqdm progress bar on stderr, shown only when stderr is a terminal and not `quiet`."""
  disable = quiet or not stderr_is_terminal()
  return tqdm(iterable, file=sys.stderr, disable=disable, dynamic_ncols=True, **kwargs)


def one_line(error: BaseException) -> str:
  """The error's message on one line: lines joined with '; ', or with ' ' after a line
  that ends with ':' (a title and its list: "unusable arrays (1): fc.weight ...")."""
  text = ""
  for line in (line.strip() for line in str(error).splitlines()):
    if line:
      text += ("" if not text else " " if text.endswith(":") else "; ") + line
  return text or type(error).__name__
