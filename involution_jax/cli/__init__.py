"""The command-line tools, and the conventions they share.

Each tool's module here (`train`, `eval`, `predict`, `export`, `visualize`,
`convert`, `summary`, `plot`, `generate`; `listing` for `involution-list`, whose own name
would hide the builtin here) has `main(argv=None) -> int`, installed as the console
script `involution-<verb>` and runnable as `python -m involution_jax.cli.<verb>`.
Nothing else of the package imports `cli`: what library code shares with the tools
(progress bars, output checks, one-line errors) is in `involution_jax.host`.
`parser` gives every tool the same help layout (what it does, then examples);
`command` turns a user's mistake (a missing file, a bad value, unreadable
weights, a missing optional extra) into one line on stderr and exit status 1, and
SIGTERM (a scheduler stopping the job) into an unwinding exit with status 143.
Pass --verbose (train, eval) or set INVOLUTION_JAX_TRACEBACK=1 to see the
traceback instead.

One grammar: the weights a command reads come first, as a positional argument
(`weights_argument`); training writes to `--workdir`. Every command takes `--quiet`
(no progress) and `--json` (its result as one JSON document on stdout;
`output_arguments`, `print_result`). A tool's module imports only light modules at the
top (this one, the standard library, NumPy, `host`), and JAX, Flax and the rest of the
package once its arguments are parsed, so `--help` and bad arguments answer at once
(tests/test_grammar.py checks that --help imports no JAX).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import pickle
import select
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from involution_jax.host.console import one_line
from involution_jax.host.signals import Terminated, raise_terminated

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


class _OneSpellingParser(argparse.ArgumentParser):
  """Options are spelled with underscores (`--batch_size`, as the config's fields:
  `--config.batch_size`); the same name with dashes (`--batch-size`) is accepted too."""

  def parse_known_args(self, args=None, namespace=None):
    args = sys.argv[1:] if args is None else list(args)
    end = args.index("--") if "--" in args else len(args)  # after "--": values, as given
    spelled = [self._spelled(a) for a in args[:end]] + args[end:]
    return super().parse_known_args(spelled, namespace)

  def _spelled(self, arg: str) -> str:
    if not arg.startswith("--") or arg.startswith("--config."):
      return arg
    name, equals, value = arg.partition("=")
    underscored = "--" + name[2:].replace("-", "_")
    # An option's name, or the start of one (argparse takes unambiguous abbreviations).
    if any(option.startswith(underscored) for option in self._option_string_actions):
      return underscored + equals + value
    return arg


def parser(prog: str, description: str, examples: Sequence[str]) -> argparse.ArgumentParser:
  """An argument parser whose --help ends with `examples`, one command a line; options
  with underscores, accepted with dashes too."""
  return _OneSpellingParser(
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


def add_config_arguments(parser: argparse.ArgumentParser, first_choice: str) -> None:
  """--config NAME[:ARG] | PATH.py[:ARG] (default None: `first_choice`, a run's saved
  config, where there is one, else "default"), and the multi-host options."""
  parser.add_argument(
    "--config",
    default=None,
    help="a shipped config by name, NAME[:ARG] (e.g. default, rednet50_imagenet, "
    "digitscenes_seg:conv; involution-list configs), or a file, PATH.py[:ARG] (default: "
    f"{first_choice} where there is one, else default); then override any field with "
    "--config.FIELD=VALUE",
  )
  group = parser.add_argument_group(
    "several hosts",
    "the same command on every host; TPU pods and SLURM jobs are detected "
    "without these (or set JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID)",
  )
  group.add_argument("--coordinator_address", default=None, help="host:port of process 0")
  group.add_argument("--num_processes", type=int, default=None, help="how many processes")
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
  import jax
  from absl import logging as absl_logging

  from involution_jax.training.distributed import initialize_distributed

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


def weights_argument(
  parser: argparse.ArgumentParser, help: str = WEIGHTS_HELP, old_option: bool = False
) -> None:
  """WEIGHTS, the first positional argument; `old_option`: `--weights WEIGHTS` too (eval
  and visualize had it), then WEIGHTS may be left out of the positions."""
  if not old_option:
    parser.add_argument("weights", metavar="WEIGHTS", help=help)
    return
  parser.add_argument("weights", metavar="WEIGHTS", nargs="?", default=None, help=help)
  parser.add_argument("--weights", dest="weights_option", help=argparse.SUPPRESS)


def given_weights(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
  """The WEIGHTS of `weights_argument` (exits with a usage error when absent or twice)."""
  if not hasattr(args, "weights_option"):
    return args.weights
  if args.weights and args.weights_option:
    parser.error(f"WEIGHTS given twice: {args.weights} and --weights {args.weights_option}")
  if not (args.weights or args.weights_option):
    parser.error("the following arguments are required: WEIGHTS")
  return args.weights or args.weights_option


def output_arguments(parser: argparse.ArgumentParser, result: str) -> None:
  """--quiet and --json; `result`: what --json prints, e.g. "the metrics"."""
  parser.add_argument(
    "--quiet",
    action="store_true",
    help="no progress output (bars are drawn only on a terminal anyway; elsewhere a plain "
    "line per interval)",
  )
  parser.add_argument(
    "--json", action="store_true", help=f"print {result} as JSON (and nothing else on stdout)"
  )


def print_result(args: argparse.Namespace, result, text: str | None = None) -> None:
  """`result` as JSON under --json; otherwise `text` (default: the JSON, indented)."""
  import json

  if args.json or text is None:
    print(json.dumps(result, indent=2))
  else:
    print(text)


def work_output(args: argparse.Namespace):
  """A context in which what the work prints goes to stderr under --json (stdout is the
  JSON alone)."""
  import contextlib

  return contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()


def say(args: argparse.Namespace, text: str) -> None:
  """A line about the work, not its result: on stdout, or on stderr under --json (stdout
  is then the JSON alone); nothing under --quiet."""
  if not args.quiet:
    print(text, file=sys.stderr if args.json else sys.stdout, flush=True)


def _stdout_closed() -> bool:
  """Whether standard output is a pipe whose reader has gone."""
  try:
    poller = select.poll()
    poller.register(sys.stdout.fileno(), select.POLLOUT)
    return any(event & select.POLLERR for _, event in poller.poll(0))
  except (OSError, ValueError, AttributeError):  # not a file, or no poll here
    return False


def command(prog: str) -> Callable[[Main], Main]:
  """Decorates a tool's `main`: user errors become `prog: error: ...` and exit status 1;
  Ctrl-C exits with 130 and SIGTERM with 143, each after one line and the clean-up; a
  closed output pipe (`| head`) with 141, silently."""

  def decorate(main: Main) -> Main:
    @functools.wraps(main)
    def run(argv: Sequence[str] | None = None) -> int:
      in_main_thread = threading.current_thread() is threading.main_thread()
      if in_main_thread:  # only the main thread may set signal handlers
        previous = signal.signal(signal.SIGTERM, raise_terminated)
      try:
        code = main(argv)
        if argv is None:
          sys.stdout.flush()  # a reader gone (`| head`) is found here, not at exit
        return code
      except USER_ERRORS as e:
        if isinstance(e, BrokenPipeError) and argv is None and _stdout_closed():
          quiet = os.open(os.devnull, os.O_WRONLY)  # stop quietly, as cat does
          os.dup2(quiet, sys.stdout.fileno())
          os.close(quiet)
          return 128 + signal.SIGPIPE
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
