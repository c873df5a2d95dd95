"""The model zoo: released RedNet weights by name, downloaded once into a cache.

The official PyTorch download links are dead; PaddleClas's released `.pdparams`
files (architecturally identical, same parameter counts) are the ones still
online. `fetch(name)` downloads one into a cache folder and checks it on every
later use against the size and SHA-256 recorded at first download; conversion
(strict, through the restricted unpickler) is `convert.load_pretrained`, and
`pretrained.load(name)` gives the model.

* Cache: `$INVOLUTION_JAX_CACHE`, default `~/.cache/involution_jax`; a file put
  there by hand (same name) is picked up, and recorded, on first use.
* Source: `$INVOLUTION_JAX_PRETRAINED_URL` replaces the base URL (a mirror, or a
  local server in the tests).
* Downloads go to a temporary file renamed only when complete, with a timeout
  per network read and retries; a progress bar shows on a terminal.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.request

from involution_jax.host.cache import CACHE_ENV as CACHE_ENV  # re-exported: the tests set it
from involution_jax.host.cache import cache_dir, sha256_of
from involution_jax.host.console import one_line, progress
from involution_jax.host.paths import output_folder

URL_ENV = "INVOLUTION_JAX_PRETRAINED_URL"
DEFAULT_URL = "https://paddle-imagenet-models-name.bj.bcebos.com/dygraph"
MANIFEST = "manifest.json"


@dataclasses.dataclass(frozen=True)
class Pretrained:
  """One released weights file and what is published about its model (ImageNet-1k)."""

  depth: int
  params: int  # exact, from the official code
  gmacs: float  # multiply-adds at 224 x 224, the official README's "FLOPs"
  top1_paper: float  # the official README's single-crop top-1
  top1_paddle: float  # PaddleClas's model zoo, for these very files

  @property
  def filename(self) -> str:
    return f"RedNet{self.depth}_pretrained.pdparams"


REGISTRY = {
  "rednet26": Pretrained(26, 9_233_166, 1.73, 75.96, 75.95),
  "rednet38": Pretrained(38, 12_386_986, 2.22, 77.48, 77.47),
  "rednet50": Pretrained(50, 15_540_806, 2.71, 78.35, 78.33),
  "rednet101": Pretrained(101, 25_652_950, 4.74, 78.92, 78.94),
  "rednet152": Pretrained(152, 33_984_582, 6.79, 79.12, 79.17),
}


class DownloadError(OSError):
  """The weights could not be fetched; the message says where to put them by hand."""


def list_pretrained(pattern: str = "*") -> list[str]:
  """The pretrained names (`REGISTRY`) matching the shell-style `pattern`, e.g. "rednet5*";
  each loads with `pretrained.load(name)` and works wherever a weights path does."""
  return [name for name in REGISTRY if fnmatch.fnmatchcase(name, pattern)]


def is_name(name: str) -> bool:
  """Whether `name` is a registry name (as opposed to a path)."""
  return name in REGISTRY


def url(name: str) -> str:
  base = os.environ.get(URL_ENV) or DEFAULT_URL
  return f"{base.rstrip('/')}/{_entry(name).filename}"


def _entry(name: str) -> Pretrained:
  if name not in REGISTRY:
    raise ValueError(f"unknown pretrained model {name!r}; known: {', '.join(REGISTRY)}")
  return REGISTRY[name]


def _digest(path: str) -> tuple[int, str]:
  return os.path.getsize(path), sha256_of(path)


def _read_manifest(folder: str) -> dict:
  try:
    with open(os.path.join(folder, MANIFEST)) as f:
      return json.load(f)
  except FileNotFoundError:
    return {}
  except (OSError, ValueError) as e:
    raise ValueError(f"{os.path.join(folder, MANIFEST)} is unreadable ({e}); delete it") from e


def _record(folder: str, filename: str, entry: dict | None) -> None:
  """Sets (or with None removes) one manifest entry; written atomically."""
  manifest = _read_manifest(folder)
  if entry is None:
    manifest.pop(filename, None)
  else:
    manifest[filename] = entry
  tmp = os.path.join(folder, f"{MANIFEST}.tmp-{os.getpid()}")
  with open(tmp, "w") as f:
    json.dump(manifest, f, indent=2, sort_keys=True)
  os.replace(tmp, os.path.join(folder, MANIFEST))


def _download_once(source: str, dest: str, timeout: float, quiet: bool) -> None:
  tmp = f"{dest}.part-{os.getpid()}"
  try:
    with urllib.request.urlopen(source, timeout=timeout) as response, open(tmp, "wb") as f:
      total = int(response.headers.get("Content-Length") or 0) or None
      with progress(
        total=total, unit="B", unit_scale=True, desc=os.path.basename(dest), quiet=quiet
      ) as bar:
        while chunk := response.read(1 << 20):
          f.write(chunk)
          bar.update(len(chunk))
      if total is not None and f.tell() != total:
        raise http.client.IncompleteRead(b"", total - f.tell())
    os.replace(tmp, dest)  # only a complete file ever has the final name
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _download(source: str, dest: str, timeout: float, retries: int, quiet: bool) -> None:
  """`source` -> `dest`, retrying network failures and server errors (not 4xx)."""
  for attempt in range(retries + 1):
    try:
      return _download_once(source, dest, timeout, quiet)
    except urllib.error.HTTPError as e:
      if e.code < 500 or attempt == retries:
        raise
    except (OSError, http.client.HTTPException):  # timeouts, resets, truncated bodies
      if attempt == retries:
        raise
    time.sleep(min(0.5 * 2**attempt, 5.0))


def cached_path(name: str) -> str:
  """Where `name`'s weights file is cached (whether or not it is there yet)."""
  return os.path.join(cache_dir(), _entry(name).filename)


def fetch(name: str, *, timeout: float = 30.0, retries: int = 2, quiet: bool = False) -> str:
  """The path of `name`'s weights file in the cache, downloaded if absent.

  A cached file must match the size and SHA-256 recorded when it first
  arrived; one that does not is reported on stderr, deleted and fetched again.

  Args:
    name: a `REGISTRY` name, e.g. "rednet50".
    timeout: seconds each connection attempt and each network read may wait.
    retries: further attempts after a network failure, a truncated body or a 5xx.
    quiet: no progress bar (there is none either when stderr is not a terminal).

  Raises:
    ValueError: an unknown name.
    DownloadError: the file could not be fetched (offline, a dead link, a
      server that stops answering); names the URL and the path where a
      manually downloaded file is picked up.
  """
  entry = _entry(name)
  folder = output_folder(cache_dir(), "pretrained cache")
  path = cached_path(name)
  if os.path.isfile(path):
    size, sha256 = _digest(path)
    recorded = _read_manifest(folder).get(entry.filename)
    if recorded is None:  # put there by hand: trusted, and checked from now on
      _record(folder, entry.filename, dict(size=size, sha256=sha256, source="found in cache"))
      return path
    if (size, sha256) == (recorded["size"], recorded["sha256"]):
      return path
    print(
      f"{path} is damaged (size {size}, SHA-256 {sha256[:12]}..., recorded "
      f"{recorded['size']}, {recorded['sha256'][:12]}...); downloading it again",
      file=sys.stderr,
    )
    os.remove(path)
  source = url(name)
  try:
    _download(source, path, timeout, retries, quiet)
  except (OSError, http.client.HTTPException) as e:
    raise DownloadError(
      f"could not download {name} from {source} ({one_line(e) or type(e).__name__}); "
      f"download that file by hand to {path} and it will be used"
    ) from e
  size, sha256 = _digest(path)
  _record(folder, entry.filename, dict(size=size, sha256=sha256, source=source))
  return path
