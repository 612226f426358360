"""Only tui/ imports textual: db/ and services/ stay headless (STYLE.md, Harlequin's contract)."""

from __future__ import annotations

import ast
import json
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
        "import services.cli, db.readmodel, services.status, services.supervisor_rpc\n"
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
