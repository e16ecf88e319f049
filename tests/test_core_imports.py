"""The rule "the Blender side never needs torch" is checked, not only written down.

Every module of the pure core (`model.core`) and of the worker link (`model.link`) is
imported in a fresh interpreter where torch (and the libraries that pull it in) cannot
be imported and bpy does not exist. If someone imports torch in the core, this fails
and names the module.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
CORE_PACKAGES = ("model/core", "model/link")

# Runs in a child so the test process's own imports (pytest plugins, torch elsewhere) do not count.
PROBE = """
import importlib, sys
for name in ("torch", "safetensors", "transformers", "ctranslate2", "bpy", "bmesh", "mathutils"):
    sys.modules[name] = None  # `import torch` now raises ImportError
failed = []
for module in sys.argv[1:]:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        failed.append(f"{module}: {exc}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def core_modules() -> list[str]:
    modules = []
    for package in CORE_PACKAGES:
        for path in sorted((REPO_ROOT / package).glob("*.py")):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


def test_the_core_has_the_modules_the_addon_imports():
    modules = core_modules()
    for expected in ("model.core.contract", "model.core.errors", "model.core.schedule", "model.core.timeline",
                     "model.core.retarget", "model.core.motion_file", "model.core.head_model",
                     "model.core.flame_import", "model.link.protocol", "model.link.client", "model.link.launch"):
        assert expected in modules


def test_every_core_module_imports_without_torch_or_blender():
    result = subprocess.run([sys.executable, "-c", PROBE, *core_modules()], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, f"these need torch or Blender:\n{result.stdout}{result.stderr}"


def test_the_probe_catches_a_torch_import(tmp_path):
    """The check itself works: a module that imports torch is reported."""
    (tmp_path / "uses_torch.py").write_text("import torch\n")
    result = subprocess.run([sys.executable, "-c", PROBE, "uses_torch"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 1 and "uses_torch" in result.stdout


@pytest.mark.parametrize("addon_package", ["captalk_addon", "operators", "panels"])
def test_the_blender_side_imports_only_the_core_from_the_back_end(addon_package):
    """Blender-side modules import `model.core` / `model.link` at their top level; the back
    end proper (torch) only inside the explicit in-process path."""
    import ast

    offenders = []
    for path in sorted((REPO_ROOT / addon_package).glob("*.py")):
        for node in ast.parse(path.read_text()).body:  # top-level statements only
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("model.") \
                    and not node.module.startswith(("model.core", "model.link")):
                offenders.append(f"{path.name}: from {'.' * node.level}{node.module}")
    assert not offenders, offenders


def test_the_worker_announces_itself_before_torch_is_imported(tmp_path):
    """What `python -m model serve` runs before its ready line (the command-line parser, the
    server, the manifest reader, the loader) needs no torch: the worker is ready while torch
    and the weights load behind it (`model.serve.loading`)."""
    modules = ["model.__main__", "model.serve.server", "model.serve.loading", "model.train.config",
               "model.core.checkpoint_manifest", "model.run"]
    result = subprocess.run([sys.executable, "-c", PROBE, *modules], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, f"these need torch:\n{result.stdout}{result.stderr}"
    parser = ("import sys\nfor name in ('torch', 'safetensors'):\n    sys.modules[name] = None\n"
              "from model.__main__ import main\nmain(['serve', '--help'])\n")  # builds every command's flags
    built = subprocess.run([sys.executable, "-c", parser], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr[-2000:]
