"""The package's layers (ARCHITECTURE.md): imports run downward only, every
module is placed and described, and the command starts without heavy
libraries."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "backmap_plugin"

#: unit (first name below ``backmap_plugin``) -> layer; a unit imports from
#: itself or from units of lower layers only
LAYERS = {
    "core": 0,
    "io": 1, "build": 1,
    "model": 2,
    "openmm": 3, "force_fields": 3,
    "gromacs": 4,
    "training": 5,
    "api": 6, "report": 6,
    "pipeline": 7, "reporter": 7,
    "cli": 8,
    "__main__": 9,
}

#: libraries that ``backmap --help`` must not load (each costs 0.1-1 s)
HEAVY = ("torch", "e3nn", "mdtraj", "openmm", "scipy", "matplotlib", "numpy", "parmed", "pdbfixer", "MDAnalysis")


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        yield path, parts


def _imported(path: Path, parts: tuple) -> list[tuple[int, str, tuple]]:
    """(line, imported module under backmap_plugin, names) for every import, nested ones included."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = parts[:-1] if parts[-1] != "__init__" else parts[:-1]
    if parts[-1] == "__init__":
        package = parts[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "backmap_plugin":
                    found.append((node.lineno, alias.name, ()))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - (node.level - 1)])
                module = ".".join(["backmap_plugin", *base] + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "backmap_plugin":
                module = node.module
            else:
                continue
            found.append((node.lineno, module, tuple(a.name for a in node.names)))
    return found


def test_every_module_belongs_to_a_layer():
    units = {parts[0] for _, parts in _modules() if parts != ("__init__",)}
    assert units <= set(LAYERS), f"place these in LAYERS and ARCHITECTURE.md: {sorted(units - set(LAYERS))}"


def test_imports_run_downward_only():
    upward = []
    for path, parts in _modules():
        if parts == ("__init__",):
            continue  # the package's lazy export table names the public API of every layer
        unit = parts[0]
        for line, module, names in _imported(path, parts):
            target = module.split(".")[1:]
            if not target:
                # ``from backmap_plugin import X``: only the version is allowed (X is a module otherwise)
                if set(names) != {"__version__"}:
                    upward.append(f"{path.relative_to(ROOT)}:{line} imports {names} from the package root")
                continue
            other = target[0]
            if other != unit and LAYERS[other] >= LAYERS[unit]:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({unit}, layer {LAYERS[unit]}) "
                              f"imports {module} ({other}, layer {LAYERS[other]})")
    assert not upward, "imports that do not run downward:\n" + "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path):
    """The walker finds nested and relative imports (a check that could not fail would be no check)."""
    module = tmp_path / "ideal.py"
    module.write_text("def f():\n    from ..api import backmap\n    import backmap_plugin.cli.command\n")
    found = _imported(module, ("build", "ideal"))
    assert [m for _, m, _ in found] == ["backmap_plugin.api", "backmap_plugin.cli.command"]


def test_architecture_describes_every_module():
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    missing = []
    for path, parts in _modules():
        if parts[-1] in ("__init__", "__main__"):
            continue
        if "/".join(parts) + ".py" not in text:
            missing.append("/".join(parts) + ".py")
    assert not missing, f"ARCHITECTURE.md does not describe: {missing}"


@pytest.mark.parametrize("argv", [["--help"], ["run", "--help"], ["refine", "--help"], ["train", "--help"]])
def test_help_loads_no_heavy_library(argv):
    code = (
        "import json, sys\n"
        "from backmap_plugin.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({list(HEAVY)!r}))), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stderr.strip().splitlines()[-1]) == []


def test_run_loads_only_what_it_uses(tmp_path):
    """A ``backmap run`` of a C-alpha trace with the shipped model imports neither scipy, sympy (e3nn's
    load-time import is deferred) nor ``torch._dynamo`` (``torch.optim`` would import it): 0.1, 0.4 and
    0.7 s of every start-up on a 2-core CPU."""
    example = Path(__file__).resolve().parents[1] / "examples" / "trpcage_ca.pdb"
    code = (
        "import json, sys\n"
        "from backmap_plugin.cli.command import main\n"
        f"main(['run', {str(example)!r}, '-o', {str(tmp_path / 'out.pdb')!r}])\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'sympy')"
        " or m.startswith('torch._dynamo'))), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stderr.strip().splitlines()[-1]) == []
    assert (tmp_path / "out.pdb").stat().st_size > 0


def test_dir_lists_the_public_names_before_their_import():
    """``dir(backmap_plugin)`` (tab completion) lists the names imported on first use, and loads none of them."""
    code = ("import sys, backmap_plugin\n"
            "assert {'backmap', 'Backmapper', 'BackmapReporter', 'run_pipeline'} <= set(dir(backmap_plugin))\n"
            "assert not {'torch', 'mdtraj', 'openmm', 'backmap_plugin.api'} & set(sys.modules)\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_e3nn_sympy_parts_work_after_the_deferred_load():
    """e3nn's Legendre polynomials (its one use of sympy) give the real sympy results."""
    code = (
        "import sys\n"
        "import backmap_plugin.model.networks\n"
        "assert 'sympy' not in sys.modules\n"
        "from e3nn.o3 import _angular_spherical_harmonics as a\n"
        "import sympy\n"
        "z, y = sympy.symbols('z y', real=True)\n"
        "assert sympy.simplify(a._sympy_legendre(2, 1) - sympy.sqrt(30) * y * z / (4 * sympy.sqrt(sympy.pi))) == 0\n"
        "print(a._poly_legendre(3, 2))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "(1, 2): 1.0219854" in out.stdout


@pytest.mark.parametrize("cache", ["empty", "off"])
def test_run_builds_the_model_with_the_lean_import(tmp_path, cache):
    """The ``backmap`` command (torch imported without its compiler front end) builds a model when the built-model
    cache has none, keeps it, and reads it back: e3nn's gates ask for a torch.Generator while they are built and
    its modules look up torch._dynamo while pickled, which failed on a user's first run (a cold cache)."""
    example = Path(__file__).resolve().parents[1] / "examples" / "trpcage_ca.pdb"
    folder = tmp_path / "cache"
    env = {**__import__("os").environ, "BACKMAP_CACHE_DIR": str(folder) if cache == "empty" else ""}
    outputs = []
    for run in range(2 if cache == "empty" else 1):
        out = tmp_path / f"out{run}.pdb"
        done = subprocess.run([sys.executable, "-m", "backmap_plugin.cli", "run", str(example), "-o", str(out)],
                              capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        outputs.append(out.read_bytes())
        assert len(list(folder.glob("model-*.pt"))) == (1 if cache == "empty" else 0)
    assert all(o == outputs[0] for o in outputs)
