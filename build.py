"""Validate and build the CapTalk extension zip with Blender's own builder.

Usage:
    python build.py [--output-dir dist] [--check-install] [--user-resources DIR]

Run it with a Python that has the `bpy` package installed (the project's .venv).
Blender's builder is the standalone script `bl_pkg/cli/blender_ext.py` shipped inside
bpy; using it (rather than zipping by hand) means the manifest and the file list are
checked exactly as Blender and extensions.blender.org check them.

`--check-install` then installs the zip headless into a throw-away Blender user
folder (BLENDER_USER_RESOURCES) in a fresh process and fails unless the add-on is
really enabled there.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent
MANIFEST = "blender_manifest.toml"

# What the zip must hold: the manifest, the add-on entry point and its packages
# (model/ too, because the back-end process runs it from the installed folder).
REQUIRED_FILES = (MANIFEST, "__init__.py")
REQUIRED_DIRS = ("model/", "captalk_addon/", "operators/", "panels/")
# Top-level folders and files that are development-only and must never ship.
FORBIDDEN_TOP = ("tests", "benchmarks", "docs", "dist", "build", "build.py", "data", "recipes", "out", "farm")

# Runs in a fresh interpreter so the install sees only the temporary user folder
# (bpy reads BLENDER_USER_RESOURCES once, at import). It writes a JSON report rather
# than printing, because Blender itself also writes to stdout.
INSTALL_SCRIPT = """
import json, sys
import bpy

zip_path, module, report_path = sys.argv[1:4]
# package_install_files returns FINISHED even when the install fails, and raises
# RuntimeError when it reports an error (e.g. register() raised): the result is only
# recorded, the checks below are what count.
try:
    result = sorted(bpy.ops.extensions.package_install_files(
        filepath=zip_path, repo="user_default", enable_on_install=True))
except RuntimeError as ex:
    result = [str(ex)]
mod = sys.modules.get(module)
prefix = module.rsplit(".", 1)[-1]
report = {
    "result": result,
    "in_preferences": module in bpy.context.preferences.addons,
    "imported": mod is not None,
    # addon_utils sets __addon_enabled__ only after register() returned normally.
    "registered": bool(getattr(mod, "__addon_enabled__", False)),
    "operators": sorted(prefix + "." + n for n in dir(getattr(bpy.ops, prefix))),
}
with open(report_path, "w", encoding="utf-8") as fh:
    json.dump(report, fh)
"""


def fail(message: str) -> None:
    """Stop with a clear message on stderr and exit status 1."""
    sys.exit(f"build.py: error: {message}")


def read_manifest(source_dir: Path = SOURCE_DIR) -> dict:
    """Return the parsed blender_manifest.toml of `source_dir`."""
    with open(source_dir / MANIFEST, "rb") as fh:
        return tomllib.load(fh)


def find_blender_scripts() -> Path:
    """Return bpy's bundled `scripts/` folder (bpy/<version>/scripts).

    The version folder name changes with every bpy release (4.2, 4.5, 5.0, ...), so
    it is found by globbing instead of being hard-coded. bpy is located without
    importing it, which would start a whole Blender just to find a path.
    """
    spec = importlib.util.find_spec("bpy")
    if spec is None or spec.origin is None:
        fail(f"the bpy package is not installed for {sys.executable}")
    candidates = sorted(
        Path(spec.origin).parent.glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"),
        key=lambda p: tuple(int(x) for x in p.parents[4].name.split(".") if x.isdigit()),
    )
    if not candidates:
        fail(f"Blender's extension builder (blender_ext.py) not found under {spec.origin}")
    return candidates[-1].parents[3]


def run_builder(scripts: Path, *args: str) -> None:
    """Run Blender's `blender_ext.py` with `args`; fail if it reports an error.

    Tags are checked against the list Blender itself uses (`blender --command
    extension` passes the same file), so a typo in a tag is caught here.
    """
    builder = scripts / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
    tags = scripts / "modules" / "_bpy_internal" / "extensions" / "tags.py"
    command = [sys.executable, str(builder), *args]
    if tags.is_file():
        command.append(f"--valid-tags={tags}")
    proc = subprocess.run(command, capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        fail(f"blender_ext.py {args[0]} failed (exit status {proc.returncode})")


def check_zip_contents(zip_path: Path) -> list[str]:
    """Return a list of problems with the zip's file list (empty when fine)."""
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
    problems = []
    for required in REQUIRED_FILES:
        if required not in names:
            problems.append(f"missing {required}")
    for required in REQUIRED_DIRS:
        if not any(n.startswith(required) for n in names):
            problems.append(f"missing {required}")
    for name in names:
        parts = name.split("/")
        if (parts[0] in FORBIDDEN_TOP
                or any(p.startswith(".") or p == "__pycache__" for p in parts)
                or name.endswith((".pyc", ".zip"))
                or (parts[0] == "checkpoints" and len(parts) > 2 and parts[1] != "default")):  # local runs
            problems.append(f"should not ship {name}")
    return problems


def build(output_dir: Path, source_dir: Path = SOURCE_DIR) -> Path:
    """Validate `source_dir`, build the zip into `output_dir`, check it; return its path."""
    manifest = read_manifest(source_dir)
    scripts = find_blender_scripts()
    run_builder(scripts, "validate", str(source_dir))
    output_dir.mkdir(parents=True, exist_ok=True)
    zip_path = output_dir / f"{manifest['id']}-{manifest['version']}.zip"
    run_builder(scripts, "build", f"--source-dir={source_dir}",
                f"--output-filepath={zip_path}")
    if not zip_path.is_file():
        fail(f"the builder reported success but {zip_path} does not exist")
    if problems := check_zip_contents(zip_path):
        fail(f"{zip_path.name}: " + "; ".join(problems))
    return zip_path


def check_install(zip_path: Path, extension_id: str, user_resources: Path) -> list[str]:
    """Install `zip_path` headless into `user_resources` and check it is enabled.

    Returns the add-on's registered operators (e.g. "captalk.import_flame").
    """
    module = f"bl_ext.user_default.{extension_id}"
    report_path = user_resources / "captalk_install_report.json"
    report_path.unlink(missing_ok=True)
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(user_resources))
    proc = subprocess.run(
        [sys.executable, "-c", INSTALL_SCRIPT, str(zip_path), module, str(report_path)],
        env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not report_path.is_file():
        sys.stderr.write(proc.stdout + proc.stderr)
        fail(f"the headless install process for {zip_path.name} failed "
             f"(exit status {proc.returncode})")
    report = json.loads(report_path.read_text(encoding="utf-8"))
    if not (report["imported"] and report["registered"] and report["in_preferences"]):
        # Blender prints the add-on's traceback to stdout/stderr: show it.
        sys.stderr.write(proc.stdout + proc.stderr)
        fail(f"{module} was installed but is not enabled: imported={report['imported']}, "
             f"register() ran={report['registered']}, "
             f"in preferences={report['in_preferences']}; "
             f"install operator said: {'; '.join(report['result'])}")
    return report["operators"]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", type=Path, default=SOURCE_DIR / "dist",
                        help="where the zip is written (default: dist/)")
    parser.add_argument("--check-install", action="store_true",
                        help="install the zip headless and check the add-on is enabled")
    parser.add_argument("--user-resources", type=Path, default=None,
                        help="Blender user folder for --check-install "
                             "(default: a temporary folder, removed afterwards)")
    args = parser.parse_args(argv)

    zip_path = build(args.output_dir.resolve())
    print(f"Built {zip_path}")

    if args.check_install:
        extension_id = read_manifest()["id"]
        if args.user_resources is not None:
            args.user_resources.mkdir(parents=True, exist_ok=True)
            operators = check_install(zip_path, extension_id, args.user_resources.resolve())
        else:
            with tempfile.TemporaryDirectory(prefix="captalk-blender-user-") as tmp:
                operators = check_install(zip_path, extension_id, Path(tmp))
        print(f"Installed and enabled bl_ext.user_default.{extension_id}; "
              f"operators: {', '.join(operators) or '(none)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
