"""The house rules of shared/DESIGN.md, checked on the source: layering, module size, one
atomic-write implementation.

Layers (a module may import its own layer or a lower one, never a higher one):
  0  config, arch, assets, and the low shared helpers (common/, outputs, dist, hub)
  1  calib, quant, evaluate, io, walk, loading, studies (norms, int8)
  2  tweak
  3  studies.precision, every `*/commands.py` and `*/*_commands.py`, cli, options, testing,
     __main__
Both module-level and function-level imports count: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "normtweak"
LAYERS = {
    "config": 0, "arch": 0, "assets": 0, "common": 0, "outputs": 0, "dist": 0, "hub": 0,
    "calib": 1, "quant": 1, "evaluate": 1, "io": 1, "walk": 1, "loading": 1,
    "studies": 1, "studies.norms": 1, "studies.int8": 1,
    "tweak": 2,
    "studies.precision": 3, "cli": 3, "options": 3, "testing": 3, "__main__": 3,
}
COMMANDS_LAYER = 3
MAX_LINES = 320
# What the root package itself may hand out besides its submodules and its lazy API.
ROOT_CONSTANTS = {"__version__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def root_api() -> dict[str, str]:
    """normtweak.__init__'s lazy API: name -> the module it imports on first use."""
    tree = ast.parse((ROOT / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_API" for t in node.targets):
            return {k: v.split(":")[0] for k, v in ast.literal_eval(node.value).items()}
    raise AssertionError("normtweak/__init__.py has no _API table")


def layer_of(module: str) -> int:
    parts = module.split(".")
    if parts == ["normtweak"]:
        return 0  # only reached for ROOT_CONSTANTS: the package imports nothing eagerly
    if parts[-1] == "commands" or parts[-1].endswith("_commands"):
        return COMMANDS_LAYER
    for key in (".".join(parts[1:3]), parts[1]):  # a subpackage may have its own layer
        if key in LAYERS:
            return LAYERS[key]
    raise AssertionError(f"{module} has no layer: add normtweak.{parts[1]} to LAYERS here "
                         f"and to the layering section of shared/DESIGN.md")


def imports(path: Path, known: dict[str, Path], api: dict[str, str], source: str | None = None):
    """(line, target module, imported names) for every normtweak import in a file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    source = path.read_text(encoding="utf-8") if source is None else source
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "normtweak":
                    yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if base.split(".")[0] != "normtweak":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    yield node.lineno, sub, ()
                elif base == "normtweak" and alias.name in api:
                    yield node.lineno, api[alias.name], ()
                elif base == "normtweak" and alias.name not in ROOT_CONSTANTS:
                    raise AssertionError(f"{path}:{node.lineno}: `from normtweak import "
                                         f"{alias.name}` is neither a module nor the API")
                else:
                    yield node.lineno, base, (alias.name,)


def test_every_module_has_a_layer():
    for name in modules():
        if name != "normtweak":
            layer_of(name)


def violations(sources: dict[str, str] | None = None) -> list[str]:
    """Every upward import; `sources` replaces some modules' text (module name -> source)."""
    known, api, sources = modules(), root_api(), sources or {}
    found = []
    for name, path in known.items():
        if name == "normtweak":
            continue
        mine = layer_of(name)
        pairs = {(line, target) for line, target, _ in imports(path, known, api, sources.get(name))}
        for line, target in sorted(pairs):
            if layer_of(target) > mine:
                found.append(f"{path.relative_to(ROOT.parent)}:{line}: {name} (layer {mine}) "
                             f"imports {target} (layer {layer_of(target)})")
    return found


def test_no_module_imports_a_higher_layer():
    assert violations() == []


def test_no_module_imports_another_packages_private_names():
    """`_name`s are their package's business: share a helper by making it public, low."""
    known, api = modules(), root_api()
    found = []
    for name, path in known.items():
        for line, target, names in imports(path, known, api):
            private = [n for n in names if n.startswith("_") and n not in ROOT_CONSTANTS]
            if private and target.split(".")[:2] != name.split(".")[:2]:
                found.append(f"{path.relative_to(ROOT.parent)}:{line}: {name} imports "
                             f"{', '.join(private)} from {target}")
    assert found == []


def private_attributes(path: Path, source: str | None = None) -> list[str]:
    """`module._name` uses of a normtweak module imported under a name (`from normtweak import
    arch` ... `arch._non_block_to(...)`): a private name used through the attribute."""
    source = path.read_text(encoding="utf-8") if source is None else source
    tree = ast.parse(source)
    bound = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("normtweak"):
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("normtweak"):
                    bound[alias.asname or alias.name.split(".")[0]] = alias.name
    own = module_name(path).split(".")[:2]
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in bound and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and bound[node.value.id].split(".")[:2] != own):
            found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: "
                         f"{node.value.id}.{node.attr}")
    return found


def test_no_module_uses_another_packages_private_names_as_attributes():
    found = [line for path in modules().values() for line in private_attributes(path)]
    assert found == []


def test_the_check_catches_a_private_attribute():
    path = ROOT / "tweak" / "pipeline.py"
    planted = path.read_text(encoding="utf-8") + "\n\ndef _planted():\n    arch._secret(1)\n"
    assert any("arch._secret" in line for line in private_attributes(path, planted))


def import_cycles() -> list[list[str]]:
    """Groups of modules that import each other, directly or round a loop (lazy imports
    count: a function-level import hides a cycle, it does not remove it)."""
    known, api = modules(), root_api()
    graph = {name: {t for _, t, _ in imports(path, known, api) if t in known and t != name}
             for name, path in known.items()}
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles():
    assert import_cycles() == []


def test_the_root_package_imports_nothing_eagerly():
    tree = ast.parse((ROOT / "__init__.py").read_text(encoding="utf-8"))
    eager = [n.lineno for n in tree.body
             if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("normtweak")
             or isinstance(n, ast.Import) and any(a.name.startswith("normtweak") for a in n.names)]
    assert eager == [], "normtweak/__init__.py must stay lazy (its _API table)"


def test_the_check_catches_an_upward_import():
    """The checker itself: a lazy import of tweak from quant is reported, with its line."""
    source = (ROOT / "quant" / "rtn.py").read_text(encoding="utf-8")
    planted = source + "\n\ndef _planted():\n    from normtweak.tweak.pipeline import tweak_model\n"
    line = planted.count("\n")
    expected = (f"normtweak/quant/rtn.py:{line}: normtweak.quant.rtn (layer 1) imports "
                f"normtweak.tweak.pipeline (layer 2)")
    assert expected in violations({"normtweak.quant.rtn": planted})
    assert expected not in violations()


@pytest.mark.parametrize("name", sorted(modules()))
def test_modules_stay_short(name):
    lines = modules()[name].read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_LINES, (f"{name}: {lines} lines; split it by concept "
                                f"(shared/DESIGN.md: modules stay under ~300 lines)")


# --- one atomic-write implementation -------------------------------------------------

ATOMIC_HOME = "normtweak.common.files"
# Temporary folders that are not writes of a result (nothing is renamed into place).
SCRATCH = {"normtweak.walk.activations": "mkdtemp"}
RENAMES = {("os", "replace"), ("os", "rename"), ("os", "renames"), ("shutil", "move"),
           ("tempfile", "mkstemp"), ("tempfile", "mkdtemp"), ("tempfile", "NamedTemporaryFile")}


def file_moves(path: Path) -> list[tuple[int, str]]:
    """Calls that rename files or make temporaries: os.replace/rename, shutil.move,
    tempfile.mk*, and Path.replace/rename (one positional argument: str.replace needs two)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        attr, owner = node.func.attr, node.func.value
        if isinstance(owner, ast.Name) and (owner.id, attr) in RENAMES:
            found.append((node.lineno, f"{owner.id}.{attr}"))
        elif attr in ("replace", "rename") and len(node.args) == 1 and not node.keywords:
            found.append((node.lineno, f"Path.{attr}"))
    return found


def test_files_are_renamed_into_place_in_one_module_only():
    """Atomic writes (temp + fsync + os.replace; temp folder + rename) live in
    normtweak.common.files; everything else calls it."""
    found = []
    for name, path in modules().items():
        if name == ATOMIC_HOME:
            continue
        for line, call in file_moves(path):
            if SCRATCH.get(name) != call.split(".")[-1]:
                found.append(f"{path.relative_to(ROOT.parent)}:{line}: {call}")
    assert found == [], "use normtweak.common.files (atomic_file, write_atomic, atomic_folder)"
    assert file_moves(modules()[ATOMIC_HOME])  # the checker sees the real implementation


# --- short parameter lists -----------------------------------------------------------

MAX_PARAMS = 8


def parameter_count(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Named parameters (positional-only, ordinary, keyword-only), self/cls not counted;
    *args and **kwargs do not count (a click command may take **options)."""
    args = node.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    return sum(name not in ("self", "cls") for name in names)


def is_kernel(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Triton kernels (@triton.jit and the like) take what the kernel launch passes."""
    return any("triton" in ast.unparse(d) or "jit" in ast.unparse(d) for d in node.decorator_list)


def long_signatures(path: Path, source: str | None = None) -> list[str]:
    source = path.read_text(encoding="utf-8") if source is None else source
    found = []
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not is_kernel(node)
                and parameter_count(node) > MAX_PARAMS):
            found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}: {node.name} takes "
                         f"{parameter_count(node)} parameters")
    return found


def test_no_function_takes_more_than_eight_parameters():
    """Group what belongs together in a frozen dataclass (the config/ specs' style)."""
    found = [line for path in modules().values() for line in long_signatures(path)]
    assert found == [], f"more than {MAX_PARAMS} parameters:\n" + "\n".join(found)


def test_the_check_catches_a_long_signature():
    path = ROOT / "quant" / "rtn.py"
    params = ", ".join(f"p{i}" for i in range(MAX_PARAMS + 1))
    planted = path.read_text(encoding="utf-8") + (
        f"\n\ndef _planted(self, {params}, *args, **kwargs):\n    pass\n"
        f"\n\n@triton.jit\ndef _kernel({params}):\n    pass\n"
        f"\n\ndef _fine(cls, {', '.join(params.split(', ')[:-1])}, *rest, **options):\n    pass\n")
    found = long_signatures(path, planted)
    assert len(found) == 1 and f"_planted takes {MAX_PARAMS + 1} parameters" in found[0]
