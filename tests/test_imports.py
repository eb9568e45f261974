"""The package's import graph: no cycles, every module imports alone in a fresh interpreter (in
dependency order, so a failure names the module at fault), and the math never pulls in fairseq."""
import ast
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/ is top level
PACKAGE = "fairseq_t2r"
# modules that need an optional package (pip install .[gpu]): without it, importing them may fail
# on exactly that package, and nothing imports them unless selected
OPTIONAL = {"fairseq_t2r.ops.additive.triton": "triton"}


def package_modules():
    """{module name: path} of every module of the package, except ``__main__`` scripts."""
    out = {}
    for root, _, files in os.walk(os.path.join(REPO, PACKAGE)):
        for f in sorted(files):
            if f.endswith(".py") and f != "__main__.py":  # (importing one runs its tool)
                rel = os.path.relpath(os.path.join(root, f), REPO)[:-3].split(os.sep)
                name = ".".join(rel[:-1] if rel[-1] == "__init__" else rel)
                out[name] = os.path.join(root, f)
    return out


def imported_names(name, path, modules):
    """The package's modules that ``name`` imports (at top level or inside functions)."""
    is_pkg = path.endswith("__init__.py")
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            parent = base[: len(base) - node.level + 1] if node.level else []
            mod = ".".join(parent + ([node.module] if node.module else []))
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:  # "pkg.mod.func" -> "pkg.mod"
                t = t.rpartition(".")[0]
            if t and t != name and not t.startswith(name + "."):
                found.add(t)  # (a package importing its own submodules runs before them: no edge)
    return found


def dependency_order():
    """Modules sorted so that each comes after what it imports; fails on a cycle."""
    modules = package_modules()
    deps = {name: imported_names(name, path, modules) for name, path in modules.items()}
    for name in list(deps):  # importing a.b.c runs a and a.b first
        parts = name.split(".")
        deps[name] |= {".".join(parts[:i]) for i in range(1, len(parts))}
    order, state = [], {}

    def visit(name, chain):
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = chain[chain.index(name):] + [name]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        state[name] = "visiting"
        for dep in sorted(deps[name]):
            visit(dep, chain + [name])
        state[name] = "done"
        order.append(name)

    for name in sorted(deps):
        visit(name, [])
    return order


def run_python(code):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)


def test_no_import_cycle_and_every_module_imports():
    order = dependency_order()
    assert order[0] == PACKAGE and len(order) == len(package_modules())
    code = ("import importlib, sys\n"
            f"for name in {order!r}:\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            f"    except ModuleNotFoundError as e:\n"
            f"        if {OPTIONAL!r}.get(name) != e.name:\n"
            "            sys.exit(f'importing {name}: {type(e).__name__}: {e}')\n"
            "    except BaseException as e:\n"
            "        sys.exit(f'importing {name}: {type(e).__name__}: {e}')\n")
    res = run_python(code)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.parametrize("module", ["fairseq_t2r.ops", "fairseq_t2r.errors", "fairseq_t2r.checkpoint",
                                    "fairseq_t2r.prep.lm"])
def test_math_and_tools_without_fairseq_do_not_import_it(module):
    res = run_python(f"import sys, {module}\n"
                     "assert 'fairseq' not in sys.modules, sorted(m for m in sys.modules if m.startswith('fairseq'))\n")
    assert res.returncode == 0, res.stderr[-3000:]


def test_package_registers_when_fairseq_imports_it():
    """fairseq imports a --user-dir after itself: the package then registers models and criteria."""
    res = run_python("import fairseq, fairseq_t2r\n"
                     "from fairseq.models import ARCH_MODEL_REGISTRY\n"
                     "from fairseq.criterions import CRITERION_REGISTRY\n"
                     "assert 't2r_transformer_lm' in ARCH_MODEL_REGISTRY and 't2r_transformer' in ARCH_MODEL_REGISTRY\n"
                     "assert 't2r_attention_transfer' in CRITERION_REGISTRY and 't2r_distillation' in CRITERION_REGISTRY\n")
    assert res.returncode == 0, res.stderr[-3000:]


def test_package_registers_when_its_own_module_imports_fairseq():
    """The package first, then one of its modules imports fairseq (``fairseq_t2r.modules`` does):
    registration waits until that module has finished, then holds (with the patches)."""
    res = run_python("import fairseq_t2r.modules, sys\n"
                     "from fairseq.models import ARCH_MODEL_REGISTRY\n"
                     "from fairseq import checkpoint_utils\n"
                     "from fairseq_t2r.patches.loaders import TorchTrustingCheckpoints\n"
                     "assert 't2r_transformer_lm' in ARCH_MODEL_REGISTRY\n"
                     "assert isinstance(checkpoint_utils.torch, TorchTrustingCheckpoints)\n")
    assert res.returncode == 0, res.stderr[-3000:]


# The layers, lowest first: a module imports only modules of its own layer or a lower one (the
# package root, which only registers, excepted). Tools are everything not named here.
LAYERS = [
    ("math", ("ops", "errors", "interrupts", "machine")),
    ("modules", ("modules",)),
    ("models", ("models", "patches", "checkpoint", "config", "command_line")),
    ("criterions", ("criterions",)),
]


def layer_of(name):
    """(rank, layer name) of a module of the package; tools rank above every named layer."""
    rel = name[len(PACKAGE) + 1:]
    for rank, (layer, prefixes) in enumerate(LAYERS):
        if any(rel == p or rel.startswith(p + ".") for p in prefixes):
            return rank, layer
    return len(LAYERS), "tools"


def test_each_module_imports_only_its_layer_or_below():
    """ops < modules < models (with the fairseq glue and the options) < criterions < tools, and no
    module imports another module's private names."""
    modules = package_modules()
    upward, private = [], []
    for name, path in sorted(modules.items()):
        if name == PACKAGE:
            continue
        rank, layer = layer_of(name)
        for dep in sorted(imported_names(name, path, modules) - {PACKAGE}):
            dep_rank, dep_layer = layer_of(dep)
            if dep_rank > rank:
                upward.append(f"{name} ({layer}) imports {dep} ({dep_layer})")
        for node in ast.walk(ast.parse(open(path).read(), path)):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                private += [f"{name} imports {node.module}.{a.name}" for a in node.names
                            if a.name.startswith("_") and not a.name.startswith("__")]
    assert not upward, "; ".join(upward)
    assert not private, "; ".join(private)
