"""The artist's workflow, run inside Blender's UI (not background mode) by tests/ui/run.sh.

    blender --python tests/ui/driver.py -- --run-dir DIR

Everything happens from a `bpy.app.timers` timer, so Blender's own event loop keeps
running: the modal Generate gets its timer events, real key presses and mouse clicks come
from xdotool (XTEST, as from a keyboard), screenshots from ImageMagick's `import`. The
scenario is a generator: it yields seconds to wait, or a `Wait` (a condition and a time
limit), and the timer resumes it.

Each check is recorded in DIR/result.json (name, passed, detail); a failed check does not
stop the run where the workflow can go on (so one run shows every failure), an exception
does. Checks named F1..F10 reproduce the findings of issue 15. Screenshots: DIR/shots/*.png.
The driver needs only bpy and the standard library (Debian's Blender has its own Python).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

import bpy

ADDON = "bl_ext.user_default.captalk"
TICK = 0.05


class Wait:
    """Resume the scenario once ``condition()`` is true; fail after ``timeout`` seconds."""

    def __init__(self, condition, timeout: float, what: str):
        self.condition, self.what = condition, what
        self.deadline = time.monotonic() + timeout


class Driver:
    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.shots = run_dir / "shots"
        self.shots.mkdir(parents=True, exist_ok=True)
        self.result = {"blender": bpy.app.version_string, "checks": [], "error": None, "done": False}
        self.scenario = scenario(self)
        self.waiting: Wait | None = None
        self.resume_at = 0.0

    # ------------------------------------------------------------------ recording
    def check(self, name: str, passed: bool, detail: str = "") -> bool:
        self.result["checks"].append({"name": name, "passed": bool(passed), "detail": detail})
        print(f"captalk-ui check {'PASS' if passed else 'FAIL'}: {name}{': ' + detail if detail else ''}", flush=True)
        self.save()
        return bool(passed)

    def save(self) -> None:
        (self.run_dir / "result.json").write_text(json.dumps(self.result, indent=1))

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        subprocess.run(["import", "-window", "root", str(path)], check=True, timeout=30)
        return path

    # ------------------------------------------------------------------ the timer
    def tick(self):
        try:
            if self.waiting is not None:
                if not self.waiting.condition():
                    if time.monotonic() > self.waiting.deadline:
                        raise TimeoutError(f"timed out waiting for {self.waiting.what}")
                    return TICK
                self.waiting = None
            if time.monotonic() < self.resume_at:
                return TICK
            item = next(self.scenario)
            if isinstance(item, Wait):
                self.waiting = item
            else:
                self.resume_at = time.monotonic() + float(item)
            return TICK
        except StopIteration:
            self.result["done"] = True
        except Exception:
            self.result["error"] = traceback.format_exc()
            print("captalk-ui driver error:\n" + self.result["error"], flush=True)
        self.save()
        bpy.app.timers.register(quit_blender, first_interval=0.5)
        return None


def quit_blender():
    bpy.ops.wm.quit_blender()
    return None


# ---------------------------------------------------------------------- helpers
def xdo(*args: str) -> str:
    """Run xdotool (real X input events); returns its output."""
    return subprocess.run(["xdotool", *args], check=True, capture_output=True, text=True, timeout=30).stdout.strip()


def window():
    return bpy.context.window_manager.windows[0]


def area_of(kind: str):
    return next((a for a in window().screen.areas if a.type == kind), None)


def region_of(area, kind: str):
    return next(r for r in area.regions if r.type == kind)


def override(kind: str = "VIEW_3D") -> dict:
    win = window()
    area = area_of(kind)
    return {"window": win, "screen": win.screen, "area": area, "region": region_of(area, "WINDOW")}


def screen_point(region, x: float, y_from_top: float) -> tuple[int, int]:
    """Window pixel (x right, y down, as xdotool wants) of a point in ``region`` given from
    its top-left corner (Blender's regions count y up from the window's bottom)."""
    return int(region.x + x), int(window().height - (region.y + region.height) + y_from_top)


def move_mouse(region, x: float, y_from_top: float) -> None:
    px, py = screen_point(region, x, y_from_top)
    xdo("mousemove", "--sync", str(px), str(py))


def addon():
    return sys.modules[ADDON]


def strips(scene):
    return addon().captalk_addon.sequencer.strip_collection(scene)


def fingerprint() -> dict:
    """What a generation could add: actions, NLA tracks and strips, per id."""
    tracks = {}
    for block in (*bpy.data.objects, *bpy.data.shape_keys):
        data = block.animation_data
        if data is not None:
            tracks[block.name] = sorted(f"{t.name}:{s.name}" for t in data.nla_tracks for s in t.strips)
    return {"actions": sorted(a.name for a in bpy.data.actions), "tracks": tracks,
            "scenes": sorted(s.name for s in bpy.data.scenes)}


def captalk_actions() -> list[str]:
    return sorted(a.name for a in bpy.data.actions if a.name.startswith("CapTalk"))


def world_bounds(obj):
    """(min xyz, max xyz) of ``obj``'s evaluated bounding box in world space."""
    corners = [obj.matrix_world @ __import__("mathutils").Vector(c) for c in obj.bound_box]
    return ([min(c[i] for c in corners) for i in range(3)], [max(c[i] for c in corners) for i in range(3)])


def overlaps(a, b) -> bool:
    (amin, amax), (bmin, bmax) = a, b
    return all(amin[i] < bmax[i] and bmin[i] < amax[i] for i in range(3))


def job():
    return bpy.context.window_manager.captalk_job


def active_run():
    """The add-on's background run in progress (Generate, the open-head build), or None."""
    return addon().captalk_addon.background.active_run()


def invoke_generate(select: str) -> None:
    """Select the strip called ``select`` only and press Generate (its INVOKE path)."""
    scene = bpy.context.scene
    for strip in strips(scene):
        strip.select = strip.name == select
    scene.sequence_editor.active_strip = strips(scene)[select]
    with bpy.context.temp_override(**override()):
        result = bpy.ops.captalk.generate_from_strip("INVOKE_DEFAULT")
    assert result == {"RUNNING_MODAL"}, f"Generate returned {result}"


OCR_ZOOM = 3


def read_region(shot: Path, region) -> list[dict]:
    """The words Tesseract reads in ``region`` of screenshot ``shot``: text, and the centre
    of its box in the region's own pixels from its top-left; grouped by ``line``."""
    top = window().height - (region.y + region.height)
    crop = shot.parent.parent / "ocr" / f"{shot.stem}-sidebar.png"  # beside shots/, not copied out
    crop.parent.mkdir(exist_ok=True)
    subprocess.run(["convert", str(shot), "-crop", f"{region.width}x{region.height}+{region.x}+{top}",
                    "-resize", f"{OCR_ZOOM * 100}%", "-colorspace", "Gray", "-negate", str(crop)],
                   check=True, timeout=60)
    tsv = subprocess.run(["tesseract", str(crop), "-", "--psm", "4", "tsv"], check=True, capture_output=True,
                         text=True, timeout=120).stdout.splitlines()
    header = tsv[0].split("\t")
    words = []
    for row in tsv[1:]:
        cells = dict(zip(header, row.split("\t")))
        if cells.get("text", "").strip() and float(cells.get("conf", -1)) >= 0:
            words.append({"text": cells["text"], "line": (cells["block_num"], cells["par_num"], cells["line_num"]),
                          "x": (int(cells["left"]) + int(cells["width"]) / 2) / OCR_ZOOM,
                          "y": (int(cells["top"]) + int(cells["height"]) / 2) / OCR_ZOOM})
    return words


def lines_of(words: list[dict]) -> list[str]:
    lines: dict = {}
    for word in words:
        lines.setdefault(word["line"], []).append(word["text"])
    return [" ".join(texts) for texts in lines.values()]


def find_words(words: list[dict], text: str) -> tuple[float, float] | None:
    """Centre of the first line whose words start with ``text`` (several words), or None."""
    wanted = text.split()
    for line in dict.fromkeys(w["line"] for w in words):
        row = [w for w in words if w["line"] == line]
        for i in range(len(row) - len(wanted) + 1):
            if [w["text"] for w in row[i:i + len(wanted)]] == wanted:
                hits = row[i:i + len(wanted)]
                return sum(w["x"] for w in hits) / len(hits), sum(w["y"] for w in hits) / len(hits)
    return None


# ---------------------------------------------------------------------- the workflow
def scenario(d: Driver):
    # Blender 5.2 reports deprecated API use as DeprecationWarning, hidden by default (F8)
    warnings.filterwarnings("always", category=DeprecationWarning, module=r"bl_ext\.user_default\.captalk")
    yield Wait(lambda: bpy.context.window_manager.windows and window().screen is not None, 60, "the UI")
    yield 1.0
    win = window()
    d.result["window"] = [win.width, win.height]
    d.check("add-on enabled", ADDON in bpy.context.preferences.addons, ADDON)
    scene = bpy.context.scene
    view3d = area_of("VIEW_3D")
    view3d.spaces.active.show_region_ui = True
    sidebar = region_of(view3d, "UI")
    yield 0.5
    sidebar.active_panel_category = "CapTalk"
    d.result["sidebar_width"] = sidebar.width
    # Real keyboard focus: the pointer over Blender's window (no window manager runs)
    move_mouse(region_of(view3d, "WINDOW"), 200, 200)
    yield 0.5
    xdo("key", "Escape")  # the splash screen
    yield 0.5
    d.screenshot("01-start")

    # -- the open head --------------------------------------------------------------
    cube = bpy.data.objects.get("Cube")
    with bpy.context.temp_override(**override()):
        bpy.ops.captalk.add_open_head("INVOKE_DEFAULT")
    yield Wait(lambda: any(o.get("captalk_rig_part") == "mesh" for o in bpy.data.objects), 120, "the open head")
    head = next(o for o in bpy.data.objects if o.get("captalk_rig_part") == "mesh")
    rig = head.parent
    d.check("F1 Add Open Head sets the panel's Rig", scene.captalk.target_rig == head,
            f"target_rig = {scene.captalk.target_rig.name if scene.captalk.target_rig else None}")
    if scene.captalk.target_rig is None:
        scene.captalk.target_rig = head  # so the rest of the workflow can go on
    colours = head.data.color_attributes.get("CapTalk colour")
    distinct = len({tuple(round(c, 3) for c in item.color) for item in colours.data}) if colours else 0
    d.check("F10 the head has its colours (skin, lips, sclera, iris, pupil, mouth)", distinct >= 6,
            f"{distinct} distinct colours")
    collection = head.users_collection[0].name
    d.check("F5 collection name", "CapTalk CapTalk" not in collection, collection)
    bpy.context.view_layer.update()
    if cube is not None:
        d.check("F6 head not inside the default cube", not overlaps(world_bounds(head), world_bounds(cube)),
                f"head {world_bounds(head)}, cube {world_bounds(cube)}")
    yield 1.0
    d.screenshot("02-open-head")

    # -- a FLAME-format file ---------------------------------------------------------
    flame = d.run_dir / "inputs" / "flame_2020.pkl"
    with bpy.context.temp_override(**override()):
        result = bpy.ops.captalk.import_flame(filepath=str(flame), expressions=50)
    flame_mesh = next((o for o in bpy.data.objects if o.get("captalk_rig_part") == "mesh" and o != head), None)
    d.check("Import FLAME", result == {"FINISHED"} and flame_mesh is not None, str(result))
    if flame_mesh is not None:
        bpy.context.view_layer.update()
        d.check("F6 FLAME head not inside another object",
                not any(overlaps(world_bounds(flame_mesh), world_bounds(o)) for o in bpy.data.objects
                        if o.type == "MESH" and o not in (flame_mesh,)),
                str(world_bounds(flame_mesh)))
        d.check("the panel's Rig stays the open head after Import FLAME", scene.captalk.target_rig == head,
                scene.captalk.target_rig.name if scene.captalk.target_rig else "None")
    scene.captalk.target_rig = head  # the bundled model drives the open head, not this FLAME rig
    yield 0.5

    # -- the speech, on the rig's scene's own strips ---------------------------------
    timeline = area_of("DOPESHEET_EDITOR") or area_of("TIMELINE")
    timeline.type = "SEQUENCE_EDITOR"
    timeline.spaces.active.view_type = "SEQUENCER"
    yield 0.5
    speech = Path(addon().__file__).parent / "samples" / "speech_sample.wav"
    long_speech = d.run_dir / "inputs" / "long_speech.wav"
    if bpy.app.version >= (5, 0, 0):
        # What the README said to do: Add > Sound in the Sequencer; 5.x has no scene there yet
        with bpy.context.temp_override(**override("SEQUENCE_EDITOR")):
            try:
                bpy.ops.sequencer.sound_strip_add(filepath=str(speech), frame_start=1, move_strips=False)
                d.result["sequencer_add_sound"] = "worked"
            except RuntimeError as exc:
                d.result["sequencer_add_sound"] = str(exc).strip()
    has_operator = hasattr(bpy.types, "CAPTALK_OT_add_speech")
    d.check("F7 an operator puts the speech on the rig's scene's strips", has_operator)
    if has_operator:
        with bpy.context.temp_override(**override()):
            bpy.ops.captalk.add_speech(filepath=str(speech), frame_start=1)
            bpy.ops.captalk.add_speech(filepath=str(long_speech), frame_start=1)
    else:
        sequencer = addon().captalk_addon.sequencer
        sequencer.add_sound_strip(scene, str(speech), 1, 1)
        sequencer.add_sound_strip(scene, str(long_speech), 1, 2)
    names = [s.name for s in strips(scene)]
    d.check("both speech strips on the rig's scene", len(names) == 2, str(names))
    short_name = next(n for n in names if n.startswith("speech_sample"))
    long_name = next(n for n in names if n.startswith("long_speech"))
    if bpy.app.version >= (5, 0, 0):
        seq_scene = win.workspace.sequencer_scene
        d.check("F7 the Sequencer shows the rig's scene (5.x)", seq_scene == scene,
                f"sequencer_scene = {seq_scene.name if seq_scene else None}")
    scene.frame_end = max(scene.frame_end, 190)
    yield 0.5
    with bpy.context.temp_override(**override("SEQUENCE_EDITOR")):
        if bpy.ops.sequencer.view_all.poll():  # 5.x: only once the Sequencer shows a scene
            bpy.ops.sequencer.view_all()
    yield 0.5

    # -- captions and sections at markers --------------------------------------------
    scene.captalk.style = "A woman speaking with lively head movements."
    scene.captalk.emotion = "Neutral"
    for frame, emotion in ((40, "extremely happy"), (120, "very sad")):
        scene.frame_current = frame
        with bpy.context.temp_override(**override()):
            bpy.ops.captalk.section_add()
        scene.captalk.sections[scene.captalk.active_section].emotion = emotion
    markers = sorted((m.frame, m.name) for m in scene.timeline_markers)
    d.check("sections at markers", [f for f, _ in markers] == [40, 120], str(markers))
    scene.frame_current = 1
    yield 1.0
    d.screenshot("03-sections")

    # -- a real ESC mid-run -----------------------------------------------------------
    before = fingerprint()
    invoke_generate(long_name)
    yield Wait(lambda: job().running and job().message, 10, "Generate to start")
    yield 0.3
    d.screenshot("04-progress-starting")
    move_mouse(region_of(view3d, "WINDOW"), 200, 200)
    xdo("key", "Escape")
    yield Wait(lambda: active_run() is None, 60, "ESC to stop Generate")
    d.check("ESC cancels Generate, scene unchanged", fingerprint() == before, json.dumps(fingerprint()))

    # -- a real click on Cancel mid-run -----------------------------------------------
    # Where Cancel will be: while Generate runs the panel shows the bar in the row of
    # Add Speech / Generate and Cancel in the row below, where Bake is now.
    yield 0.5
    words = read_region(d.screenshot("05-idle"), sidebar)
    bake_at = find_words(words, "Bake to Shape Keys")
    d.check("the panel shows Bake to Shape Keys", bake_at is not None, " | ".join(lines_of(words)))
    invoke_generate(long_name)
    yield Wait(lambda: job().running and job().message, 30, "Generate to start")
    yield 0.3
    d.result["progress_text"] = job().message
    move_mouse(sidebar, *(bake_at or (sidebar.width / 2, 300)))
    d.screenshot("06-progress")
    xdo("click", "1")
    yield Wait(lambda: active_run() is None, 60, "the Cancel click to stop Generate")
    d.check("a click on Cancel stops Generate, scene unchanged", fingerprint() == before,
            json.dumps(fingerprint()))

    # -- Generate, renaming the scene meanwhile; progress all the way ------------------
    yield 0.5
    invoke_generate(short_name)
    seen = []
    renamed = False
    start = time.monotonic()
    while active_run() is not None:
        seen.append((round(time.monotonic() - start, 2), round(job().progress, 3), job().message))
        if not renamed and job().running and time.monotonic() - start > 0.3:
            scene.name = "Shot 010"  # what an artist may do while the model works (F2)
            renamed = True
        yield TICK
        if time.monotonic() - start > 180:
            raise TimeoutError("Generate did not finish in 180 s")
    d.result["progress_seen"] = seen
    scene = bpy.context.scene
    written = captalk_actions()
    d.check("F2 Generate survives a scene rename and writes its result",
            written == [f"CapTalk {short_name} bones", f"CapTalk {short_name} shape keys"] and scene.name == "Shot 010",
            f"{written}, scene {scene.name}")
    # the worker reports 0 for all of "encoding speech": the bar must be past 0 by then (F3)
    encoding = [p for _, p, m in seen if m == "encoding speech"]
    d.check("F3 the bar has moved on while the speech is encoded", all(p > 0 for p in encoding),
            str(seen))
    values = [p for _, p, _ in seen]
    d.check("F3 progress never goes back", all(b >= a for a, b in zip(values, values[1:])), str(values))
    yield 1.0
    d.screenshot("07-generated")

    # -- undo and redo with real key presses -------------------------------------------
    move_mouse(region_of(view3d, "WINDOW"), 300, 300)
    xdo("key", "ctrl+z")
    yield 1.5
    d.check("Ctrl+Z undoes Generate", captalk_actions() == [] and written, str(captalk_actions()))
    xdo("key", "ctrl+shift+z")
    yield 1.5
    d.check("Ctrl+Shift+Z redoes Generate", captalk_actions() == written, str(captalk_actions()))
    scene = bpy.context.scene

    # -- Bake (its dialog confirmed with a real Return) ---------------------------------
    for obj in bpy.context.view_layer.objects:
        obj.select_set(False)
    head = scene.captalk.target_rig
    bpy.context.view_layer.objects.active = head
    head.select_set(True)
    actions_before_bake = set(a.name for a in bpy.data.actions)
    with bpy.context.temp_override(**override()):
        bpy.ops.captalk.bake("INVOKE_DEFAULT")
    yield 1.0
    d.screenshot("08-bake-dialog")
    xdo("key", "Return")
    yield Wait(lambda: set(a.name for a in bpy.data.actions) != actions_before_bake, 60, "the bake")
    baked = sorted(set(a.name for a in bpy.data.actions) - actions_before_bake)
    d.check("Bake writes plain actions", len(baked) >= 1, str(baked))

    # -- save, reopen, play -------------------------------------------------------------
    blend = d.run_dir / "scene.blend"
    with bpy.context.temp_override(**override()):
        bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    yield 0.5
    bpy.ops.wm.open_mainfile(filepath=str(blend))
    yield 2.0
    scene = bpy.context.scene
    d.check("reopened: sections and results", len(scene.captalk.sections) == 2 and set(written) <= set(captalk_actions()),
            f"{len(scene.captalk.sections)} sections, {captalk_actions()}")
    head = scene.captalk.target_rig
    keys = head.data.shape_keys.key_blocks
    scene.frame_set(1)
    with bpy.context.temp_override(**override()):
        bpy.ops.screen.animation_play()
    jaw = []
    for _ in range(30):
        yield 0.1
        jaw.append(round(keys["jawOpen"].value, 4))
    with bpy.context.temp_override(**override()):
        bpy.ops.screen.animation_cancel(restore_frame=False)
    d.check("playback moves the frame and the jaw", scene.frame_current > 5 and len(set(jaw)) > 3,
            f"frame {scene.frame_current}, jawOpen {jaw[:10]}...")
    yield 0.5
    d.screenshot("09-reopened")

    # -- F4: nothing the panel drew was cut at the default sidebar width ----------------
    # Blender cuts what does not fit with "..."; caption fields may (their text is wrapped below).
    captions = [scene.captalk.style, scene.captalk.emotion] + [s.style for s in scene.captalk.sections]
    cut = []
    for name in ("03-sections", "04-progress-starting", "06-progress", "07-generated"):
        sidebar = region_of(area_of("VIEW_3D"), "UI")
        for line in lines_of(read_region(d.shots / f"{name}.png", sidebar)):
            if ("..." in line or "\u2026" in line) and not any(c and c.startswith(line.split("...")[0].strip()[:12])
                                                               for c in captions):
                cut.append(f"{name}: {line}")
    d.check("F4 no label cut at the default sidebar width", not cut, f"sidebar {sidebar.width}px; " + " | ".join(cut))


def main() -> None:
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    driver = Driver(args.run_dir)
    driver.save()
    bpy.app.timers.register(driver.tick, first_interval=1.0, persistent=True)


main()
