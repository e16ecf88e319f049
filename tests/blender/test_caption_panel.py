"""The caption panel's data and operators in real Blender: scene properties that survive save,
reload and undo; caption sections tied to timeline markers; panels that draw without errors.

In-process and without the back end, so it runs on Blender 4.2 as well as 4.5 and 5.0."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

bpy = pytest.importorskip("bpy")


def add_object(scene, name: str, shape_keys: bool = False, part: str | None = None):
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    obj = bpy.data.objects.new(name, mesh)
    scene.collection.objects.link(obj)
    if shape_keys:
        obj.shape_key_add(name="Basis")
        obj.shape_key_add(name="jawOpen")
    if part:
        from captalk.captalk_addon.rig_builder import PROP_PART

        obj[PROP_PART] = part
    return obj


def add_section_at(scene, frame: int, style: str = "", emotion: str = ""):
    scene.frame_set(frame)
    assert bpy.ops.captalk.section_add() == {"FINISHED"}
    section = scene.captalk.sections[scene.captalk.active_section]
    section.style, section.emotion = style, emotion
    return section


def markers(scene) -> dict[str, int]:
    return {m.name: m.frame for m in scene.timeline_markers}


def test_properties_are_registered_with_their_defaults_and_limits(empty_scene):
    settings = empty_scene.captalk
    assert (settings.target_rig, settings.style, settings.emotion, len(settings.sections)) == (None, "", "", 0)
    assert (settings.seed, settings.guidance, settings.temperature, settings.takes) == (0, 2.0, pytest.approx(0.3), 1)
    takes = settings.bl_rna.properties["takes"]
    assert (takes.hard_min, takes.hard_max) == (1, 8)
    settings.style = "x" * 1005  # cut to MAX_CAPTION_CHARS, what the back end accepts (a byte limit in Blender)
    assert len(settings.style) == 1000
    job = bpy.context.window_manager.captalk_job
    assert (job.running, job.progress, job.message, job.backend_status) == (False, 0.0, "", "")
    progress = job.bl_rna.properties["progress"]
    assert (progress.subtype, progress.hard_min, progress.hard_max) == ("FACTOR", 0.0, 1.0)


def test_the_target_rig_accepts_captalk_rigs_and_meshes_with_shape_keys(empty_scene):
    from captalk.captalk_addon.properties import is_target_candidate

    assert empty_scene.captalk.bl_rna.properties["target_rig"].fixed_type.identifier == "Object"
    assert is_target_candidate(add_object(empty_scene, "face", shape_keys=True))
    assert is_target_candidate(add_object(empty_scene, "rig part", part="armature"))
    assert not is_target_candidate(add_object(empty_scene, "plain mesh"))
    assert not is_target_candidate(None)


def test_captions_and_sections_survive_save_and_reload(empty_scene, tmp_path):
    scene = empty_scene
    settings = scene.captalk
    face = add_object(scene, "face", shape_keys=True)
    long_style = "a calm teacher, subtle head movements, " * 20  # long captions are kept whole
    settings.target_rig, settings.style, settings.emotion = face, long_style.strip(), "a strong delighted expression"
    settings.seed, settings.guidance, settings.temperature, settings.takes = 7, 3.5, 0.8, 4
    add_section_at(scene, 40, emotion="very sad")
    add_section_at(scene, 90, style="a lively presenter")
    job = bpy.context.window_manager.captalk_job
    job.running, job.progress, job.message = True, 0.5, "window 3 of 6"
    path = tmp_path / "captions.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=str(path))
    scene = bpy.context.scene
    settings = scene.captalk
    assert settings.target_rig == bpy.data.objects["face"]
    assert (settings.style, settings.emotion) == (long_style.strip(), "a strong delighted expression")
    assert (settings.seed, settings.guidance, settings.temperature, settings.takes) == (7, 3.5, pytest.approx(0.8), 4)
    assert [(s.marker_name, s.style, s.emotion) for s in settings.sections] == [
        ("CapTalk 1", "", "very sad"), ("CapTalk 2", "a lively presenter", "")]
    assert settings.active_section == 1
    assert markers(scene) == {"CapTalk 1": 40, "CapTalk 2": 90}
    job = bpy.context.window_manager.captalk_job  # the job state is runtime only
    assert (job.running, job.progress, job.message) == (False, 0.0, "")


@pytest.mark.parametrize("how", ["linked", "overridden"])
def test_a_linked_or_overridden_character_can_be_the_target_rig(empty_scene, tmp_path, how):
    from captalk.captalk_addon.properties import is_target_candidate

    add_object(empty_scene, "face", shape_keys=True)
    library = tmp_path / "character.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(library))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    with bpy.data.libraries.load(str(library), link=True) as (_, linked):
        linked.objects = ["face"]
    face = linked.objects[0]
    bpy.context.scene.collection.objects.link(face)
    if how == "overridden":
        face = face.override_create(remap_local_usages=True)
    assert is_target_candidate(face)
    bpy.context.scene.captalk.target_rig = face
    path = tmp_path / "shot.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path))

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.open_mainfile(filepath=str(path))
    target = bpy.context.scene.captalk.target_rig
    assert target is not None and target.name == "face"
    if how == "linked":
        assert target.library is not None and bpy.path.abspath(target.library.filepath) == str(library)
    else:
        assert target.library is None and target.override_library.reference.library is not None


def test_add_section_creates_a_marker_at_the_playhead(empty_scene):
    scene = empty_scene
    scene.timeline_markers.new("CapTalk 2", frame=300)  # an artist's marker that happens to use our name
    add_section_at(scene, 37)
    add_section_at(scene, 12)
    assert [s.marker_name for s in scene.captalk.sections] == ["CapTalk 1", "CapTalk 3"]
    assert markers(scene) == {"CapTalk 2": 300, "CapTalk 1": 37, "CapTalk 3": 12}
    assert scene.captalk.active_section == 1

    scene.frame_set(37)  # a section already starts here: it becomes active, nothing is added
    assert bpy.ops.captalk.section_add() == {"CANCELLED"}
    assert len(scene.captalk.sections) == 2 and len(scene.timeline_markers) == 3
    assert scene.captalk.active_section == 0


def test_remove_section_removes_its_marker_and_only_it(empty_scene):
    scene = empty_scene
    scene.timeline_markers.new("Intro", frame=5)
    for frame in (10, 20, 30):
        add_section_at(scene, frame)
    scene.captalk.active_section = 2
    assert bpy.ops.captalk.section_remove(index=1) == {"FINISHED"}
    assert [s.marker_name for s in scene.captalk.sections] == ["CapTalk 1", "CapTalk 3"]
    assert markers(scene) == {"Intro": 5, "CapTalk 1": 10, "CapTalk 3": 30}
    assert scene.captalk.active_section == 1  # still the same section

    scene.timeline_markers.remove(scene.timeline_markers["CapTalk 3"])  # the user deletes a marker
    assert bpy.ops.captalk.section_remove() == {"FINISHED"}  # the active section, marker already gone
    assert [s.marker_name for s in scene.captalk.sections] == ["CapTalk 1"]
    assert markers(scene) == {"Intro": 5, "CapTalk 1": 10}
    assert bpy.ops.captalk.section_remove() == {"FINISHED"}
    assert markers(scene) == {"Intro": 5} and scene.captalk.active_section == 0
    assert not bpy.ops.captalk.section_remove.poll()


def test_a_section_whose_marker_is_gone_is_skipped_and_can_get_a_marker_again(empty_scene):
    from captalk.captalk_addon.sections import section_entries

    scene = empty_scene
    add_section_at(scene, 10, emotion="happy")
    add_section_at(scene, 50, style="lively")
    assert section_entries(scene) == [(10, "", "happy"), (50, "lively", "")]
    scene.timeline_markers.remove(scene.timeline_markers["CapTalk 1"])
    assert section_entries(scene) == [(50, "lively", "")]

    scene.captalk.active_section = 0
    assert not bpy.ops.captalk.section_jump.poll()  # nothing to jump to
    scene.frame_set(70)
    assert bpy.ops.captalk.section_to_playhead() == {"FINISHED"}  # a new marker, same name
    assert markers(scene) == {"CapTalk 1": 70, "CapTalk 2": 50}
    scene.frame_set(1)
    assert bpy.ops.captalk.section_jump() == {"FINISHED"} and scene.frame_current == 70
    scene.timeline_markers["CapTalk 2"].frame = 5  # moving a marker moves its section
    assert section_entries(scene) == [(70, "", "happy"), (5, "lively", "")]


def test_renaming_a_section_renames_its_marker_and_keeps_names_unique(empty_scene):
    scene = empty_scene
    scene.timeline_markers.new("Intro", frame=1)
    first = add_section_at(scene, 10)
    second = add_section_at(scene, 20)
    first.label = "Angry bit"
    assert first.marker_name == "Angry bit" and markers(scene)["Angry bit"] == 10
    second.label = "Intro"  # the artist's marker keeps its name
    assert second.marker_name == "Intro 2" and markers(scene) == {"Intro": 1, "Angry bit": 10, "Intro 2": 20}
    second.label = "  "  # an empty name is refused
    assert second.marker_name == "Intro 2"


def test_sections_become_the_caption_schedule_of_a_strip(empty_scene):
    from captalk.captalk_addon.sections import section_entries
    from captalk.model.core.timeline import SceneRate, caption_schedule

    scene = empty_scene
    scene.render.fps, scene.render.fps_base = 30, 1.001
    settings = scene.captalk
    settings.style, settings.emotion = "a calm teacher", "neutral"
    add_section_at(scene, 80, emotion="happy")  # before the audio: in force from its start
    add_section_at(scene, 160, style="lively")  # 60 frames in: 2.002 s
    add_section_at(scene, 900, emotion="sad")  # after the audio's end
    schedule = caption_schedule(section_entries(scene), settings.style, settings.emotion, 100,
                                SceneRate.from_blender(scene.render.fps, scene.render.fps_base), 10.0)
    assert schedule.to_list() == [{"start": 0.0, "style": "a calm teacher", "emotion": "happy"},
                                  {"start": pytest.approx(2.002), "style": "lively", "emotion": "happy"}]
    assert schedule.change_frames() == (51,)


def test_caption_presets_fill_the_default_captions_and_a_section(empty_scene):
    from captalk.captalk_addon.sections import EMOTION_PRESETS, STYLE_PRESETS

    scene = empty_scene
    section = add_section_at(scene, 10)
    assert bpy.ops.captalk.caption_preset(field="STYLE", section=-1, preset=0) == {"FINISHED"}
    assert bpy.ops.captalk.caption_preset(field="EMOTION", section=0, preset=1) == {"FINISHED"}
    assert scene.captalk.style == STYLE_PRESETS[0] and section.emotion == EMOTION_PRESETS[1]
    assert section.style == "" and scene.captalk.emotion == ""
    with pytest.raises(RuntimeError, match="No such caption section"):
        bpy.ops.captalk.caption_preset(field="EMOTION", section=3, preset=1)


def test_sections_and_captions_follow_undo_and_redo(empty_scene):
    """Operators called from Python push no undo step of their own, so the test pushes one
    after each, as Blender does after an operator with the UNDO option run from the UI."""
    scene = empty_scene
    bpy.ops.ed.undo_push(message="start")
    add_section_at(scene, 25, emotion="happy")
    bpy.ops.ed.undo_push(message="Add Section at Playhead")
    bpy.context.scene.captalk.style = "a calm teacher"
    bpy.ops.ed.undo_push(message="Edit style")
    assert bpy.ops.captalk.section_remove() == {"FINISHED"}
    bpy.ops.ed.undo_push(message="Remove Section")
    assert markers(bpy.context.scene) == {}

    assert bpy.ops.ed.undo() == {"FINISHED"}  # the section and its marker come back together
    scene = bpy.context.scene  # undo reloads the data: re-fetch
    assert [(s.marker_name, s.emotion) for s in scene.captalk.sections] == [("CapTalk 1", "happy")]
    assert markers(scene) == {"CapTalk 1": 25} and scene.captalk.style == "a calm teacher"
    bpy.ops.ed.undo()
    assert bpy.context.scene.captalk.style == ""
    bpy.ops.ed.undo()
    assert len(bpy.context.scene.captalk.sections) == 0 and markers(bpy.context.scene) == {}
    bpy.ops.ed.redo()
    assert markers(bpy.context.scene) == {"CapTalk 1": 25} and len(bpy.context.scene.captalk.sections) == 1


# --- drawing -------------------------------------------------------------------------------

# Headless Blender loads no icons and says so; anything else on stderr while drawing is a fault
# (Blender prints, rather than raises, errors from layout calls and from UIList callbacks).
_HARMLESS = ("no icon for icon ID",)


def draw_into_popup(panel_class, space_type: str) -> None:
    """Run ``panel_class.draw`` on a real UILayout: a popup menu's, begun and never shown
    (ending it, or a popover, crashes headless), in an area of ``space_type``. Each leaves
    its few KB behind, which Blender reports at exit as "Not freed memory blocks"."""
    window = bpy.context.window_manager.windows[0]
    area = max(window.screen.areas, key=lambda a: a.width * a.height)
    area.ui_type = space_type
    region = next(r for r in area.regions if r.type == "UI")
    with bpy.context.temp_override(window=window, area=area, region=region):
        assert panel_class.poll(bpy.context)
        popup = bpy.context.window_manager.popmenu_begin__internal(panel_class.bl_label, icon="NONE")
        panel_class.draw(SimpleNamespace(layout=popup.layout), bpy.context)


def faults(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not any(h in line for h in _HARMLESS)]


def test_panels_are_registered_in_both_sidebars_next_to_the_rig_panel(addon):
    from captalk.panels.caption_panel import SEQUENCER_PANELS, VIEW3D_PANELS

    assert bpy.types.CAPTALK_PT_rig.bl_category == "CapTalk"
    for panels, space in ((VIEW3D_PANELS, "VIEW_3D"), (SEQUENCER_PANELS, "SEQUENCE_EDITOR")):
        main, *subpanels = panels
        assert getattr(bpy.types, main.__name__).bl_space_type == space
        assert (main.bl_region_type, main.bl_category, main.bl_label) == ("UI", "CapTalk", "CapTalk")
        assert [p.bl_label for p in subpanels] == ["Captions", "Sections", "Sampling"]
        assert all(p.bl_parent_id == main.bl_idname and p.bl_space_type == space for p in subpanels)
        assert all(hasattr(bpy.types, p.__name__) for p in panels)


@pytest.mark.parametrize("running", [False, True], ids=["idle", "running"])
def test_panels_draw_without_errors(empty_scene, capfd, running):
    from captalk.panels.caption_panel import SEQUENCER_PANELS, VIEW3D_PANELS

    scene = empty_scene
    settings = scene.captalk
    settings.target_rig = add_object(scene, "face", shape_keys=True)
    settings.style = "a calm teacher, subtle head movements, " * 10  # drawn wrapped
    add_section_at(scene, 10, emotion="a strong delighted expression " * 5)
    add_section_at(scene, 40, style="lively")
    scene.timeline_markers.remove(scene.timeline_markers["CapTalk 2"])  # shown as gone
    job = bpy.context.window_manager.captalk_job
    job.running, job.progress, job.message, job.backend_status = running, 0.4, "window 2 of 5", "back end ready (CPU)"
    capfd.readouterr()

    for panels, space in ((VIEW3D_PANELS, "VIEW_3D"), (SEQUENCER_PANELS, "SEQUENCE_EDITOR")):
        for active in (0, 1):  # a section with its marker, then one without
            settings.active_section = active
            for panel in panels:
                draw_into_popup(panel, space)
    assert faults(capfd.readouterr().err) == []


def test_the_section_list_sorts_by_marker_frame_with_missing_markers_last(empty_scene):
    from captalk.panels.caption_panel import CAPTALK_UL_sections

    scene = empty_scene
    for frame in (50, 10, 30):
        add_section_at(scene, frame)
    scene.timeline_markers.remove(scene.timeline_markers["CapTalk 2"])
    ui_list = SimpleNamespace(filter_name="", bitflag_filter_item=1 << 30)
    flags, order = CAPTALK_UL_sections.filter_items(ui_list, bpy.context, scene.captalk, "sections")
    assert order == [1, 2, 0]  # new position per section: 'CapTalk 3' (30) first, 'CapTalk 1' (50), the gone one
    assert list(flags) in ([], [1 << 30] * 3)  # no name filter: nothing hidden


def test_missing_operators_draw_as_disabled_labels(addon):
    from captalk.panels.caption_panel import operator_exists

    assert operator_exists("captalk.section_add")
    assert not operator_exists("captalk.no_such_operator")
    assert not operator_exists("nosuchmodule.operator")
