"""Packaging tests: manifest validation, zip contents, headless install and enable.

Everything runs Blender's own builder (bl_pkg's blender_ext.py inside the installed
bpy) and real subprocesses. Every process that imports bpy gets
BLENDER_USER_RESOURCES pointing into tmp_path, so ~/.config/blender is never touched.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = "bl_ext.user_default.captalk"
EXPECTED_OPERATORS = {"add_open_head", "import_flame"}


def _load_build_module():
    """Import the top-level build.py under a name that cannot clash with PyPI's `build`."""
    spec = importlib.util.spec_from_file_location("captalk_build", ROOT / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_py = _load_build_module()


def run(args: list[str], user_resources: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run `args` with a private Blender user folder; return the finished process."""
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(user_resources))
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def copy_source(dst: Path) -> Path:
    """Copy the extension source tree to `dst`, leaving out venvs, VCS data and outputs."""
    shutil.copytree(ROOT, dst, ignore=shutil.ignore_patterns(
        ".venv*", ".git", ".cache", "out", "dist", "build", "__pycache__",
        ".pytest_cache", "*.pyc"))
    return dst


def validate(source: Path, user_resources: Path) -> subprocess.CompletedProcess:
    """Run Blender's validator on `source`, with Blender's own list of valid tags."""
    scripts = build_py.find_blender_scripts()
    builder = scripts / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
    tags = scripts / "modules" / "_bpy_internal" / "extensions" / "tags.py"
    return run([sys.executable, str(builder), "validate", f"--valid-tags={tags}", str(source)],
               user_resources)


def zip_names(zip_path: Path) -> list[str]:
    """Return the file names inside `zip_path`."""
    with zipfile.ZipFile(zip_path) as zf:
        return zf.namelist()


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """Build and `--check-install` once; return the process and its Blender user folder."""
    tmp = tmp_path_factory.mktemp("install")
    user_resources = tmp / "blender-user"
    proc = run([sys.executable, "build.py", "--output-dir", str(tmp / "dist"),
                "--check-install", "--user-resources", str(user_resources)], user_resources)
    return proc, user_resources


def test_manifest_passes_blender_validator(tmp_path):
    proc = validate(ROOT, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("field, pattern, replacement", [
    # A tagline must not end with punctuation.
    ("tagline", r'^(tagline = ".*)"$', r'\1."'),
    # The license list is required.
    ("license", r"^license = \[[^\]]*\]\n", ""),
    # Tags must come from Blender's list.
    ("tags", r"^tags = .*$", 'tags = ["Talking Heads"]'),
])
def test_broken_manifest_fails_validation(tmp_path, field, pattern, replacement):
    source = copy_source(tmp_path / "src")
    manifest = source / "blender_manifest.toml"
    text = manifest.read_text(encoding="utf-8")
    broken = re.sub(pattern, replacement, text, count=1, flags=re.MULTILINE)
    assert broken != text, f"test set-up: could not break {field!r}"
    manifest.write_text(broken, encoding="utf-8")

    proc = validate(source, tmp_path / "blender-user")
    assert proc.returncode != 0
    assert field in proc.stdout + proc.stderr


def test_build_produces_zip_with_expected_contents(tmp_path):
    out = tmp_path / "dist"
    proc = run([sys.executable, "build.py", "--output-dir", str(out)], tmp_path / "blender-user")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    zip_path = out / "captalk-0.1.0.zip"
    assert str(zip_path) in proc.stdout
    names = zip_names(zip_path)

    assert build_py.check_zip_contents(zip_path) == []
    for required in ("blender_manifest.toml", "__init__.py", "model/__init__.py",
                     "captalk_addon/__init__.py", "operators/__init__.py",
                     "panels/__init__.py"):
        assert required in names
    # Whatever samples/ and scripts/ hold in the tree ships (speech sample, batch script).
    for folder in ("samples", "scripts"):
        for path in (ROOT / folder).rglob("*"):
            rel = path.relative_to(ROOT).as_posix()
            if path.is_file() and "__pycache__" not in rel and not path.name.startswith("."):
                assert rel in names
    assert not any(n.startswith(("tests/", ".venv", ".git", ".ci/", "dist/"))
                   or "__pycache__" in n for n in names)
    assert "build.py" not in names


def test_build_leaves_out_development_files(tmp_path):
    """Plant every kind of development file in a copy of the tree; none may ship."""
    source = copy_source(tmp_path / "src")
    planted = [
        "tests/test_planted.py", ".venv/lib/site.py", ".venv311/lib/site.py",
        "model/__pycache__/head_model.cpython-311.pyc", "model/stale.pyc",
        ".pytest_cache/v/cache/nodeids", ".ci/run.sh", ".gitignore", ".gitattributes",
        "dist/old.zip", "build/lib/x.py", "benchmarks/bench.py", "docs/screenshot.png",
        "captalk-0.0.1.zip", "samples/take.blend1",
        "data/synth-v1/manifest.jsonl", "checkpoints/run-v1/ar.safetensors", "recipes/planted.sh",
        "out/captalk_demo.blend",
    ]
    kept = ["samples/planted.wav", "scripts/batch_planted.py", "model/planted.py",
            "checkpoints/default/planted.json"]
    for rel in planted + kept:
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_bytes(b"x")

    out = tmp_path / "out"
    proc = run([sys.executable, "build.py", "--output-dir", str(out)], tmp_path / "blender-user",
               cwd=source)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = zip_names(out / "captalk-0.1.0.zip")
    assert [rel for rel in planted if rel in names] == []
    assert [rel for rel in kept if rel not in names] == []


def test_check_install_enables_addon(installed):
    proc, user_resources = installed
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"Installed and enabled {MODULE}" in proc.stdout
    installed_dir = user_resources / "extensions" / "user_default" / "captalk"
    assert (installed_dir / "__init__.py").is_file()
    assert (installed_dir / "model").is_dir()
    assert not (installed_dir / "tests").exists()


def test_check_install_fails_when_register_raises(tmp_path):
    source = copy_source(tmp_path / "src")
    with open(source / "__init__.py", "a", encoding="utf-8") as fh:
        fh.write("\n\ndef register():\n    raise RuntimeError('planted failure')\n")
    proc = run([sys.executable, "build.py", "--output-dir", str(tmp_path / "dist"),
                "--check-install", "--user-resources", str(tmp_path / "blender-user")],
               tmp_path / "blender-user", cwd=source)
    assert proc.returncode != 0
    assert "not enabled" in proc.stderr
    assert "planted failure" in proc.stdout + proc.stderr


ENABLE_SCRIPT = """
import json, sys
import bpy  # first: it puts Blender's modules (addon_utils) on sys.path
import addon_utils

# A fresh Blender does not load user preferences: enable explicitly, as a user's
# next session (with saved preferences) would.
if addon_utils.enable(sys.argv[1], default_set=True) is None:
    sys.exit("could not enable " + sys.argv[1])
print("CAPTALK_OPERATORS=" + json.dumps(sorted(dir(bpy.ops.captalk))))
"""


def test_operators_registered_after_enable(installed):
    """In a new Blender session the installed add-on enables and registers its operators."""
    install_proc, user_resources = installed
    assert install_proc.returncode == 0, install_proc.stdout + install_proc.stderr
    proc = run([sys.executable, "-c", ENABLE_SCRIPT, MODULE], user_resources)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(l for l in proc.stdout.splitlines() if l.startswith("CAPTALK_OPERATORS="))
    operators = set(json.loads(line.split("=", 1)[1]))
    missing = EXPECTED_OPERATORS - operators
    assert not missing, f"bpy.ops.captalk lacks {sorted(missing)} (has {sorted(operators)})"
