"""Only tui/ imports textual: db/ and services/ stay headless (STYLE.md, Harlequin's contract)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADLESS = ("db", "services")


def _imported_modules(path: Path, *, top_level_only: bool = False) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.Constant)):
            found.add(str(node.args[0].value))
    return found


def test_db_and_services_source_never_imports_textual() -> None:
    """No import of textual anywhere in db/ or services/; tui only lazily, inside a function
    (`qbsync demo` opens the console), never at module level."""
    offenders = []
    files = [p for pkg in HEADLESS for p in (ROOT / pkg).rglob("*.py")]
    assert len(files) > 10  # the scan really looked at the packages
    for path in files:
        for module in _imported_modules(path):
            if module.split(".")[0] == "textual":
                offenders.append(f"{path.relative_to(ROOT)} imports {module}")
        for module in _imported_modules(path, top_level_only=True):
            if module.split(".")[0] == "tui":
                offenders.append(f"{path.relative_to(ROOT)} imports {module} at module level")
    assert offenders == []


def test_the_scan_would_catch_an_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from textual.app import App\n    import textual.widgets\n")
    assert {"textual.app", "textual.widgets"} <= _imported_modules(probe)


def test_headless_entry_points_do_not_load_textual_at_runtime() -> None:
    code = (
        "import sys, json\n"
        "import services.cli, db.readmodel, services.ops.status, services.ops.supervisor_rpc\n"
        "services.cli.build_parser()\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'textual' or m.startswith(('textual.', 'tui')))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_tui_does_load_textual() -> None:
    """The probe above is meaningful: importing the console does bring textual in."""
    code = "import sys, tui.app; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=True)
    assert out.stdout.strip() == "True"


# ---- layers and cycles --------------------------------------------------------------------------
# lowest first; a module may import its own layer or a lower one (lazily or not)
LAYERS = ("services.core", "services.model", "db", "services.intuit", "services.tokens", "services.sync",
          "services.reconcile", "services.webhook", "services.ops", "tui", "services.cli services.demo")
EMULATOR = "services.emulator"  # apart: it imports services.core only; only the roots import it
EMULATOR_MAY_IMPORT = (EMULATOR, "services.core")
ROOTS = ("services.cli", "services.demo")


def _our_modules() -> dict[str, Path]:
    found = {}
    for pkg in ("db", "services", "tui"):
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _edges(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> our modules it imports explicitly (`from pkg import submodule` is the submodule)."""
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules]
                targets.update(subs or [node.module])
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.Constant)):
                targets.add(str(node.args[0].value))
        for key in list(_command_targets(tree)):
            targets.add(key)
        edges[name] = {t for t in targets if t in modules and t != name}
    return edges


def _command_targets(tree: ast.AST) -> set[str]:
    """'package.module:function' strings (the CLI's lazy dispatch table) count as imports."""
    return {node.value.split(":")[0] for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and re.fullmatch(r"(services|db|tui)(\.\w+)+:\w+", node.value)}


def _layer(module: str) -> int | None:
    for i, layer in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in layer.split()):
            return i
    return 0 if module == "services" else None


def test_every_module_has_a_layer_and_no_import_points_up() -> None:
    modules = _our_modules()
    edges = _edges(modules)
    assert len(modules) > 40 and sum(map(len, edges.values())) > 100  # the scan really saw the code
    unplaced = [m for m in modules if _layer(m) is None and not m.startswith(EMULATOR)]
    assert unplaced == []
    upward = []
    for importer, imported in sorted(edges.items()):
        for target in sorted(imported):
            if importer.startswith(EMULATOR):
                ok = target.startswith(EMULATOR_MAY_IMPORT)
            elif target.startswith(EMULATOR):
                ok = importer in ROOTS
            else:
                ok = _layer(target) <= _layer(importer)
            if not ok:
                upward.append(f"{importer} -> {target}")
    assert upward == []


def test_there_are_no_import_cycles_lazy_imports_included() -> None:
    edges = _edges(_our_modules())
    cycles = _cycles(edges)
    assert cycles == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_contract_checks_would_catch_a_violation() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _layer("db.upserts") < _layer("services.intuit.client") < _layer("services.tokens.vault")
    assert _layer("services.core.errors") < _layer("services.model.entities") < _layer("db.connection")
    probe = ast.parse('COMMANDS = {"x": "services.ops.status:cmd_status"}')
    assert _command_targets(probe) == {"services.ops.status"}
