"""The package's shape: the layer order of docs/architecture.md, a Qt-free core, a headless install.

The layer order below is the one docs/architecture.md draws; keep the two in step.
"""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "napari_labelfx"

# Bottom to top: a package may import only packages on its own level or below it.
LAYERS: list[set[str]] = [
    {"core"},
    {"io"},
    {"models"},
    {"annotations"},
    {"data"},
    {"tools"},
    {"forest"},
    {"inference"},
    {"export"},
    {"methods"},
    {"engine"},
    {"evaluation"},
    {"cli", "widgets"},
]
# Upward imports that issue 15's redesign has not removed yet. The test fails when one is gone (so the list
# only shrinks) and when a new one appears.
KNOWN_UPWARD: set[tuple[str, str]] = set()
GUI_MODULES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "superqt", "magicgui")
GUI_PACKAGES = {"widgets"}


def _level(package: str) -> int:
    for i, layer in enumerate(LAYERS):
        if package in layer:
            return i
    raise AssertionError(f"package {package!r} is missing from the layer order in tests/test_structure.py")


def _imports(path: Path) -> list[tuple[str, int]]:
    """Absolute names of every module ``path`` imports (top level and inside functions), with line numbers."""
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    here = parts if path.name == "__init__.py" else parts[:-1]
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(here[: len(here) - (node.level - 1)] + ([node.module] if node.module else []))
                found.append((base, node.lineno))
                if not node.module:  # "from .. import engine": the names are modules
                    found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
            else:
                found.append((node.module or "", node.lineno))
    return found


def _subpackages() -> list[str]:
    return sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())


def _package_edges() -> dict[tuple[str, str], str]:
    edges: dict[tuple[str, str], str] = {}
    for sub in _subpackages():
        for path in (PACKAGE / sub).rglob("*.py"):
            for name, line in _imports(path):
                parts = name.split(".")
                if parts[0] == "napari_labelfx" and len(parts) > 1 and parts[1] != sub and (PACKAGE / parts[1]).is_dir():
                    edges.setdefault((sub, parts[1]), f"{path.relative_to(PACKAGE.parent)}:{line}")
    return edges


def test_every_package_has_a_layer():
    for sub in _subpackages():
        _level(sub)


def test_no_package_imports_a_package_above_it():
    edges = _package_edges()
    upward = {edge: where for edge, where in edges.items() if _level(edge[1]) > _level(edge[0])}
    new = {edge: where for edge, where in upward.items() if edge not in KNOWN_UPWARD}
    assert not new, f"imports of a higher layer (see docs/architecture.md): {new}"
    gone = KNOWN_UPWARD - set(upward)
    assert not gone, f"these upward imports are gone: remove them from KNOWN_UPWARD: {sorted(gone)}"


def test_core_imports_no_qt_or_napari():
    found = []
    for sub in _subpackages():
        if sub in GUI_PACKAGES:
            continue
        for path in (PACKAGE / sub).rglob("*.py"):
            found += [f"{path.relative_to(PACKAGE.parent)}:{line} {name}" for name, line in _imports(path)
                      if name.split(".")[0] in GUI_MODULES]
    assert not found, found


# Run in a fresh interpreter where every GUI module fails to import, as on a server without the gui extra.
_HEADLESS = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys
    from pathlib import Path

    BLOCKED = {blocked!r}

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{{name}} is blocked: a headless install has no GUI")
            return None

    sys.meta_path.insert(0, Block())
    import napari_labelfx

    skipped = []
    for info in pkgutil.walk_packages(napari_labelfx.__path__, "napari_labelfx."):
        if info.name.startswith("napari_labelfx.widgets") or info.name == "napari_labelfx.__main__":
            continue
        importlib.import_module(info.name)
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    assert not loaded, loaded

    from napari_labelfx.cli import main
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0, exc.code

    import numpy as np, tifffile
    from napari_labelfx._sample_data import make_nuclei_2d
    tmp = Path(sys.argv[1])
    d = make_nuclei_2d(seed=3, size=64)
    tifffile.imwrite(tmp / "img.tif", (d["image"] * 1000).astype(np.uint16))
    tifffile.imwrite(tmp / "lab.tif", d["strong"].astype(np.uint16))
    rc = main(["train", "--images", str(tmp / "img.tif"), "--labels", str(tmp / "lab.tif"), "--kind", "strong",
               "--out", str(tmp / "model"), "--iters", "2", "--patch", "32", "--batch", "1", "--device", "cpu"])
    assert rc == 0, rc
    assert (tmp / "model").is_dir()
    print("HEADLESS-OK")
    """
)


def test_library_and_cli_work_without_gui_packages(tmp_path):
    script = _HEADLESS.format(blocked=set(GUI_MODULES))
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=240,
                          cwd=tmp_path)
    assert proc.returncode == 0 and "HEADLESS-OK" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_python_dash_m_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "napari_labelfx", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    from napari_labelfx import __version__

    assert proc.stdout.strip() == __version__


def test_gui_packages_are_an_extra():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = " ".join(project["dependencies"]).lower()
    for name in ("napari>", "napari=", "qtpy", "superqt", "magicgui", "pyqt"):
        assert name not in core, name
    gui = " ".join(project["optional-dependencies"]["gui"]).lower()
    for name in ("napari", "qtpy", "superqt", "magicgui", "pyqt6"):
        assert name in gui, name
