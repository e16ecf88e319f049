"""``python -m model flame-adapter FILE``: build (or rebuild) the adapter of a FLAME rig.

FILE is the user's FLAME file (.pkl / .npz, read as *Import FLAME* reads it) or the
CapTalk head-model file *Import FLAME* wrote. The adapter goes to the user's data folder
(`model.core.flame_adapter.adapter_path`, keyed by the head-model id, which carries the
FLAME file's hash); a failed registration leaves its reason beside it instead, so the rig
can say why the bundled model cannot drive it.
"""
from __future__ import annotations

import time
import zipfile
from pathlib import Path

from ..core.errors import MissingPart
from ..core.flame_adapter import adapter_path, failure_path
from ..core.head_model import HeadModel
from ..core.paths import default_open_head_file
from .build import build_adapter
from .registration import RegistrationError


def load_target(path: Path, **import_options) -> HeadModel:
    """A CapTalk head-model file as it is; anything else through the FLAME importer."""
    from ..core.flame_import import import_flame

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if "meta.npy" in archive.namelist():
                return HeadModel.load(path)
    return import_flame(path, **import_options)


def run(file: str, out: str | None = None, open_head: str | None = None, keep_shapes: bool = True,
        **import_options) -> Path:
    """Build and save the adapter; return its path. `RegistrationError` (exit 2) when it cannot be."""
    started = time.perf_counter()
    target = load_target(Path(file), **import_options)
    source_file = Path(open_head) if open_head else default_open_head_file()
    if not source_file.is_file():
        raise MissingPart(f"the open head is not built yet ({source_file}); run ./captalk.sh setup or "
                          f"python -m model build-open-head --out {source_file}")
    source = HeadModel.load(source_file)
    destination = Path(out) if out else adapter_path(target.model_id)
    failed = failure_path(target.model_id) if not out else destination.with_suffix(".failed.txt")
    try:
        adapter = build_adapter(source, target, keep_shapes=keep_shapes)
    except RegistrationError as exc:
        failed.parent.mkdir(parents=True, exist_ok=True)
        failed.write_text(str(exc) + "\n")
        destination.unlink(missing_ok=True)
        raise
    failed.unlink(missing_ok=True)
    adapter.save(destination)
    elapsed = time.perf_counter() - started
    for note in adapter.notes:
        print(note)
    worst = sorted(adapter.report["channels"].items(), key=lambda item: -item[1]["relative"])[:5]
    print("largest residuals: " + ", ".join(f"{name} {100 * r['relative']:.0f}% ({r['rms_mm']:.2f} mm rms)"
                                            for name, r in worst))
    print(f"unmapped: {', '.join(adapter.unmapped) or 'none'}")
    print(f"FLAME adapter: {destination} (built in {elapsed:.2f} s)")
    return destination
