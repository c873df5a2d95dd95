"""The package's imports point one way (docs/architecture.md): read from the source with ast."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "involution_jax"

# Lowest first. A module may import its own unit (sub-package or module) and units
# of lower layers, never a unit of its own layer or of a higher one.
# Old module names kept as deprecated aliases of where their code lives now (README lists
# them): `python -m involution_jax.<verb>` and the README's old imports keep working.
DEPRECATED = (
  "train",
  "eval",
  "predict",
  "export",
  "visualize",
  "generate",
  "convert",
  "summary",
  "plot",
) + ("pretrained", "paddle")
LAYERS = [
  ("host",),  # the machine: cache folder, one run per workdir, console, output paths, SIGTERM
  ("ops",),
  ("models", "data"),
  ("configs", "portability"),
  ("weights",),  # checkpoints, official formats, the zoo, the one loader, ModelInfo
  ("tasks",),
  ("training", "inference", "nnx"),
  ("cli",),  # the commands: nothing but the deprecated aliases imports them
  DEPRECATED,
]
# Besides the deprecated aliases: __init__ (the public API), nnx, portability.
MOST_ROOT_MODULES = 5
ROOT_MAY_IMPORT = {"models", "ops"}  # involution_jax/__init__.py: the public API
# Optional extras may be imported where they are used, with a clear error if missing; so
# may scikit-learn, which only the digits dataset uses (~0.75 s every command would pay).
LAZY_ALLOWED = {
  "torch",
  "matplotlib",
  "pycocotools",
  "tensorflow_datasets",
  "safetensors",
  "sklearn",
}


def _modules() -> dict[str, ast.Module]:
  out = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    out[name] = ast.parse(path.read_text(), str(path))
  return out


MODULES = _modules()


def _imported(module: str, node: ast.AST) -> list[str]:
  """Fully qualified names an import statement brings in."""
  if isinstance(node, ast.Import):
    return [a.name for a in node.names]
  if node.level:
    package = module.split(".")
    is_package = (PACKAGE.parent / pathlib.Path(*package) / "__init__.py").exists()
    base = package[: len(package) - node.level + (1 if is_package else 0)]
    prefix = ".".join(base + ([node.module] if node.module else []))
  else:
    prefix = node.module or ""
  return [prefix] + [f"{prefix}.{a.name}" for a in node.names]


def _package_imports(module: str, tree: ast.Module) -> set[str]:
  """Modules of the package that `module` imports, anywhere in its file."""
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      for name in _imported(module, node):
        while name and name not in MODULES:
          name = name.rpartition(".")[0]
        if name and name != module and not module.startswith(name + "."):
          found.add(name)
  return found


GRAPH = {m: _package_imports(m, tree) for m, tree in MODULES.items()}


def _unit(module: str) -> str:
  return module.split(".")[1] if "." in module else ""


def _layer(unit: str) -> int:
  for i, units in enumerate(LAYERS):
    if unit in units:
      return i
  raise AssertionError(
    f"involution_jax.{unit} is in no layer: add it to LAYERS and to docs/architecture.md"
  )


def test_every_unit_has_a_layer():
  for module in MODULES:
    if _unit(module):
      _layer(_unit(module))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
  unit = _unit(module)
  for target in sorted(GRAPH[module]):
    other = _unit(target)
    if not unit:
      assert other in ROOT_MAY_IMPORT, f"involution_jax/__init__.py imports {target}"
    elif other != unit:
      assert other and _layer(other) < _layer(unit), (
        f"{module} (layer {_layer(unit)}) imports {target} (layer {_layer(other)}): "
        "imports must point to lower layers"
      )


def test_no_import_circles():
  state = {}

  def visit(module, path):
    state[module] = "open"
    for target in GRAPH[module]:
      assert state.get(target) != "open", f"import circle: {' -> '.join(path + [target])}"
      if target not in state:
        visit(target, path + [target])
    state[module] = "done"

  for module in MODULES:
    if module not in state:
      visit(module, [module])


# The commands import the rest after parsing their arguments (test_cli checks --help).
@pytest.mark.parametrize("module", sorted(m for m in MODULES if _unit(m) != "cli"))
def test_imports_at_the_top_except_optional_extras(module):
  top_level = {id(node) for node in MODULES[module].body}
  for node in ast.walk(MODULES[module]):
    if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in top_level:
      names = _imported(module, node)
      assert names[0].split(".")[0] in LAZY_ALLOWED, (
        f"{module} line {node.lineno}: import {names[0]} inside a function or block; "
        "only optional extras may be imported lazily"
      )


def test_no_module_imports_scikit_learn_at_its_top():
  """Only the digits dataset needs it, where it reads them: every command would otherwise
  pay its import (~0.75 s) at start-up."""
  for module, tree in MODULES.items():
    for node in tree.body:
      if isinstance(node, (ast.Import, ast.ImportFrom)):
        names = _imported(module, node)
        assert not any(n.split(".")[0] == "sklearn" for n in names), (module, node.lineno)


def test_the_checks_see_an_upward_import():
  """The graph reader itself: a models module importing the trainer would be caught."""
  tree = ast.parse("from involution_jax.training import trainer\nfrom . import layers\n")
  found = _package_imports("involution_jax.models.rednet", tree)
  assert found == {
    "involution_jax.training",
    "involution_jax.training.trainer",
    "involution_jax.models.layers",
  }
  assert _layer("training") > _layer("models")


def test_the_public_api_imports_from_the_package_root():
  from involution_jax import Involution, RedNet, create_model, rednet50, rednet101
  from involution_jax.weights import convert, paddle

  assert callable(convert.from_torch_state_dict) and callable(paddle.load_pdparams)
  assert rednet101().depth == 101 and create_model("rednet152").depth == 152
  assert isinstance(rednet50(), RedNet) and Involution().kernel_size == 7


def test_the_package_root_holds_few_modules_besides_the_deprecated_aliases():
  root = sorted(m.removeprefix("involution_jax.") for m in MODULES if m.count(".") == 1)
  root = [m for m in root if (PACKAGE / f"{m}.py").exists()]
  kept = [m for m in root if m not in DEPRECATED]
  assert len(kept) + 1 <= MOST_ROOT_MODULES, f"modules at the package root: __init__, {kept}"
  for alias in DEPRECATED:
    assert ast.get_docstring(MODULES[f"involution_jax.{alias}"]).startswith("Deprecated alias")


def _task_names() -> set[str]:
  """Every `name = "..."` of a class in tasks/."""
  names = set()
  for module, tree in MODULES.items():
    if _unit(module) != "tasks":
      continue
    for node in ast.walk(tree):
      named = isinstance(node, ast.Assign) and [getattr(t, "id", "") for t in node.targets]
      if named == ["name"] and isinstance(node.value, ast.Constant) and node.value.value:
        names.add(node.value.value)
  return names


def test_nothing_outside_tasks_and_configs_branches_on_a_task_name():
  """Adding a task is a module in tasks/ and a line in TASKS: everything else works from
  the Task protocol (tasks/base.py), never from `task == "segmentation"`."""
  names = _task_names()
  assert {"classification", "segmentation", "two_stage_detection", "language_model"} <= names
  for module, tree in MODULES.items():
    if _unit(module) in ("tasks", "configs"):
      continue
    for node in ast.walk(tree):
      if isinstance(node, (ast.Compare, ast.MatchValue)):
        for value in ast.walk(node):
          assert not (isinstance(value, ast.Constant) and value.value in names), (
            f"{module} line {node.lineno} compares with the task name {value.value!r}"
          )


def test_every_task_has_the_whole_protocol():
  from involution_jax.tasks import TASKS, Task

  for name, task in TASKS.items():
    assert isinstance(task(), Task) and task.name == name, name
