"""Command-line conventions shared by the `involution-<verb>` tools.

Each tool's module (`train`, `eval`, `predict`, `export`, `visualize`,
`convert`, `summary`) has `main(argv=None) -> int`, installed as the console
script `involution-<verb>` and runnable as `python -m involution_jax.<verb>`.
`parser` gives every tool the same help layout (what it does, then examples);
`command` turns a user's mistake (a missing file, a bad value, unreadable
weights, a missing optional extra) into one line on stderr and exit status 1, and
SIGTERM (a scheduler stopping the job) into an unwinding exit with status 143.
Pass --verbose (train, eval) or set INVOLUTION_JAX_TRACEBACK=1 to see the
traceback instead. This module imports nothing of the package, so any tool's
module may use it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence

import jax
from absl import logging as absl_logging
from tqdm import tqdm

TRACEBACK_ENV = "INVOLUTION_JAX_TRACEBACK"
# What bad input raises: missing or unreadable files, bad values, refused pickles,
# missing optional extras. Anything else is a bug and keeps its traceback.
USER_ERRORS = (OSError, ValueError, ImportError, pickle.UnpicklingError)

WEIGHTS_HELP = (
  "a training workdir or checkpoint folder, official .pth / .pdparams / .safetensors "
  "weights, or a pretrained name (rednet26, rednet38, rednet50, rednet101, rednet152; "
  "downloaded once)"
)

Main = Callable[[Sequence[str] | None], int]


def parser(prog: str, description: str, examples: Sequence[str]) -> argparse.ArgumentParser:
  """An argument parser whose --help ends with `examples`, one command a line."""
  return argparse.ArgumentParser(
    prog=prog,
    description=description,
    epilog="examples:\n" + "\n".join(f"  {e}" for e in examples),
    formatter_class=argparse.RawDescriptionHelpFormatter,
  )


def split_config_overrides(
  argv: Sequence[str], prefix: str = "--config."
) -> tuple[list[str], list[str]]:
  """argv -> (the other arguments, ["FIELD=VALUE", ...] from `--config.FIELD=VALUE`).

  `--config.FIELD VALUE` (two words) works too.
  """
  rest, overrides, args = [], [], list(argv)
  while args:
    arg = args.pop(0)
    if not arg.startswith(prefix):
      rest.append(arg)
    elif "=" in arg:
      overrides.append(arg[len(prefix) :])
    elif args and not args[0].startswith("--"):
      overrides.append(f"{arg[len(prefix) :]}={args.pop(0)}")
    else:
      raise ValueError(f"{arg}: expected {arg}=VALUE")
  return rest, overrides


def parse_with_config_overrides(
  parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> tuple[argparse.Namespace, list[str]]:
  """(parsed arguments, ["FIELD=VALUE", ...]) of `argv` (default: the command line)."""
  rest, overrides = split_config_overrides(sys.argv[1:] if argv is None else argv)
  return parser.parse_args(rest), overrides


def run_collective(fn: Callable, *args):
  """`fn(*args)`; in a multi-process run, a failed collective (a dead peer) stops this
  process at once with `peer_failed`."""
  try:
    return fn(*args)
  except jax.errors.JaxRuntimeError as e:
    if jax.process_count() == 1:
      raise
    peer_failed(e)


def add_config_arguments(parser: argparse.ArgumentParser, default: str | None) -> None:
  """--config NAME[:ARG] | PATH.py[:ARG], and the multi-host options."""
  parser.add_argument(
    "--config",
    default=default,
    required=default is None,
    help="a shipped config by name, NAME[:ARG] (e.g. default, rednet50_imagenet, "
    "digitscenes_seg:conv), or a file, PATH.py[:ARG]"
    + (f" (default: {default})" if default else "")
    + "; then override any field with --config.FIELD=VALUE",
  )
  group = parser.add_argument_group(
    "several hosts",
    "the same command on every host; TPU pods and SLURM jobs are detected "
    "without these (or set JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID)",
  )
  group.add_argument("--coordinator_address", default=None, help="host:port of process 0")
  group.add_argument("--num_processes", type=int, default=None)
  group.add_argument("--process_id", type=int, default=None, help="this process's index")
  group.add_argument(
    "--initialization_timeout",
    type=int,
    default=300,
    help="seconds to wait for all processes to connect",
  )
  group.add_argument(
    "--heartbeat_timeout",
    type=int,
    default=100,
    help="seconds without a heartbeat after which a process is declared dead "
    "and every other process stops with an error",
  )
  parser.add_argument(
    "--verbose",
    action="store_true",
    help="keep the libraries' INFO logs (orbax, grain), and show a traceback with an error",
  )


def cluster_processes() -> int:
  """Processes a SLURM job step or a TPU pod slice runs (1 elsewhere)."""
  env = os.environ
  if "SLURM_NTASKS" in env and "SLURM_PROCID" in env:
    return int(env["SLURM_NTASKS"])
  if env.get("TPU_WORKER_HOSTNAMES"):
    return len(env["TPU_WORKER_HOSTNAMES"].split(","))
  return 1


def initialize_distributed(
  coordinator_address: str | None = None,
  num_processes: int | None = None,
  process_id: int | None = None,
  initialization_timeout: int = 300,
  heartbeat_timeout: int = 100,
) -> bool:
  """`jax.distributed.initialize` when arguments, JAX_* variables or a cluster ask for it.

  Explicit settings come from the arguments or JAX_COORDINATOR_ADDRESS /
  JAX_NUM_PROCESSES / JAX_PROCESS_ID; TPU pods and SLURM jobs are detected
  without them. Returns whether it initialised.
  """
  env = os.environ
  coordinator = coordinator_address or env.get("JAX_COORDINATOR_ADDRESS")
  if not coordinator and cluster_processes() == 1:
    return False
  if coordinator:  # explicit: every value from arguments or JAX_* variables
    num_processes = num_processes or int(env.get("JAX_NUM_PROCESSES", 0)) or None
    if process_id is None and "JAX_PROCESS_ID" in env:
      process_id = int(env["JAX_PROCESS_ID"])
  # JAX's preemption service would take SIGTERM over (it only sets a flag that nothing
  # here reads); without it, SIGTERM unwinds each process as in a one-process run.
  jax.config.update("jax_enable_preemption_service", False)
  jax.distributed.initialize(
    coordinator_address=coordinator,
    num_processes=num_processes,
    process_id=process_id,
    initialization_timeout=initialization_timeout,
    heartbeat_timeout_seconds=heartbeat_timeout,
  )
  return True


class _OneLineRecords(logging.Filter):
  """Library log records as one line each, without their tracebacks: a failure that stops
  a command (a full disk fails every write of a checkpoint, each logged from its thread)
  is said once, as the command's error, not in hundreds of lines before it."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    if record.name == "asyncio" and "exception was never retrieved" in message:
      return False  # a write's failure, already reported by the write that awaited it
    record.msg, record.args = message.split("\n", 1)[0], ()
    record.exc_info = record.exc_text = record.stack_info = None
    return True


class _OnceEachUnraisable:
  """`sys.unraisablehook`: each distinct exception that nothing could catch (raised in a
  `__del__` or a library's callback) as one line, once: a full disk makes tensorstore's
  callbacks fail ~100 times with "Event loop is closed" after the failed write."""

  def __init__(self, previous: Callable) -> None:
    self.previous, self.seen = previous, set()

  def __call__(self, unraisable) -> None:
    error, where = unraisable.exc_value, unraisable.object
    text = (
      f"{type(error).__name__}: {one_line(error)}"
      if error is not None
      else unraisable.err_msg or "an exception"
    )
    if text not in self.seen:
      self.seen.add(text)
      place = f" in {where!r}" if where is not None else ""
      print(f"exception ignored{place}: {text}", file=sys.stderr)


def one_line_library_logs() -> None:
  """Every log handler of this process prints library records as `_OneLineRecords`, and
  exceptions no caller could catch are said once each (`_OnceEachUnraisable`)."""
  for handler in [*logging.getLogger().handlers, logging.lastResort]:
    if handler is not None and not any(isinstance(f, _OneLineRecords) for f in handler.filters):
      handler.addFilter(_OneLineRecords())
  if not os.environ.get(TRACEBACK_ENV) and not isinstance(sys.unraisablehook, _OnceEachUnraisable):
    sys.unraisablehook = _OnceEachUnraisable(sys.unraisablehook)


def _restore_library_logs() -> None:
  """Undoes `one_line_library_logs` (a command called in-process leaves its process as
  it found it; a command-line run keeps it to the end, when late records arrive)."""
  for handler in [*logging.getLogger().handlers, logging.lastResort]:
    for found in [f for f in getattr(handler, "filters", []) if isinstance(f, _OneLineRecords)]:
      handler.removeFilter(found)
  if isinstance(sys.unraisablehook, _OnceEachUnraisable):
    sys.unraisablehook = sys.unraisablehook.previous


def start(args) -> None:
  """What train and eval do first: quiet libraries, join the other processes."""
  if not args.verbose:  # orbax and grain log every checkpoint step at INFO
    absl_logging.set_verbosity(absl_logging.WARNING)
    one_line_library_logs()
  if (
    initialize_distributed(
      args.coordinator_address,
      args.num_processes,
      args.process_id,
      args.initialization_timeout,
      args.heartbeat_timeout,
    )
    and jax.process_index() == 0
  ):
    print(
      f"{jax.process_count()} processes, {jax.device_count()} devices "
      f"({jax.local_device_count()} per process)"
    )


def peer_failed(error: Exception) -> None:
  """A collective failed in a multi-process run: almost always a dead peer. Stop now.

  Exits at once (os._exit): the normal shutdown would wait on the dead peer at the
  distributed runtime's shutdown barrier and then abort with a long trace.
  """
  sys.stderr.write(
    f"\nerror: process {jax.process_index()} of {jax.process_count()}: a collective "
    f"operation failed ({str(error).splitlines()[0][:300]}).\nAnother process has most "
    "likely died or lost its connection; see its log. This process stops now. Restart "
    "all processes with the same command to resume from the last checkpoint.\n"
  )
  sys.stderr.flush()
  os._exit(1)


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


def stderr_is_terminal() -> bool:
  """Whether progress bars can be drawn (stderr is a terminal, not a log file)."""
  return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def progress(iterable=None, *, quiet: bool = False, **kwargs) -> tqdm:
  """A tqdm progress bar on stderr, shown only when stderr is a terminal and not `quiet`."""
  disable = quiet or not stderr_is_terminal()
  return tqdm(iterable, file=sys.stderr, disable=disable, dynamic_ncols=True, **kwargs)


def add_quiet_argument(parser: argparse.ArgumentParser) -> None:
  parser.add_argument(
    "--quiet", action="store_true", help="no progress bars (none either when not a terminal)"
  )


def one_line(error: BaseException) -> str:
  """The error's message on one line: lines joined with '; ', or with ' ' after a line
  that ends with ':' (a title and its list: "unusable arrays (1): fc.weight ...")."""
  text = ""
  for line in (line.strip() for line in str(error).splitlines()):
    if line:
      text += ("" if not text else " " if text.endswith(":") else "; ") + line
  return text or type(error).__name__


class Terminated(BaseException):
  """SIGTERM arrived (a scheduler stopping or preempting the job): unwinds as Ctrl-C does,
  so `finally` blocks run (a training run stops its reader processes, frees its shared
  memory and releases its workdir)."""


def _raise_terminated(signum, frame) -> None:
  signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the clean-up
  raise Terminated


@contextlib.contextmanager
def sigterm_as_a_request() -> Iterator[threading.Event]:
  """Within the block, SIGTERM sets the event it yields instead of raising `Terminated`
  wherever the main thread is: for code whose library calls must not be cut in the
  middle (a checkpoint being written, a reader's queue). The code checks the event where
  stopping is safe and raises `Terminated` there; a request left unanswered at the end
  of the block is raised then."""
  requested = threading.Event()
  if threading.current_thread() is not threading.main_thread():
    yield requested
    return
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: requested.set())
  try:
    yield requested
  finally:
    signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
  if requested.is_set():
    raise Terminated


def command(prog: str) -> Callable[[Main], Main]:
  """Decorates a tool's `main`: user errors become `prog: error: ...` and exit status 1;
  Ctrl-C exits with 130 and SIGTERM with 143, each after one line and the clean-up."""

  def decorate(main: Main) -> Main:
    @functools.wraps(main)
    def run(argv: Sequence[str] | None = None) -> int:
      in_main_thread = threading.current_thread() is threading.main_thread()
      if in_main_thread:  # only the main thread may set signal handlers
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
      try:
        return main(argv)
      except USER_ERRORS as e:
        if os.environ.get(TRACEBACK_ENV) or "--verbose" in (sys.argv[1:] if argv is None else argv):
          raise
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return 1
      except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
      except Terminated:
        print(f"{prog}: stopped by SIGTERM", file=sys.stderr)
        return 128 + signal.SIGTERM
      finally:
        if in_main_thread:
          signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
        if argv is not None:  # called in-process, not as the command line
          _restore_library_logs()

    return run

  return decorate
