"""The rig's colours (model.core.appearance): a face one recognises in any render."""
from __future__ import annotations

import numpy as np
import pytest

from flame_fixtures import write_flame_npz
from model.core import appearance
from model.core.flame_import import import_flame
from model.core.head_model import HeadModel


def classes(colours: np.ndarray, index: np.ndarray) -> set[tuple]:
    return {tuple(np.round(c, 3)) for c in colours[index, :3]}


def rgb(colour) -> tuple:
    return tuple(np.round(np.asarray(colour, dtype=np.float32), 3))


@pytest.fixture(scope="module")
def open_head(open_head_file) -> HeadModel:
    return HeadModel.load(open_head_file)


def test_open_head_has_skin_lips_eyes_with_iris_and_pupil_and_a_mouth_interior(open_head):
    colours = appearance.vertex_colours(open_head)
    assert colours.shape == (open_head.num_vertices, 4) and colours.dtype == np.float32
    assert np.all(colours[:, 3] == 1.0)
    lips, eyes = open_head.regions["lips"], open_head.regions["eyes"]
    assert classes(colours, lips) == {rgb(appearance.LIPS)}
    assert classes(colours, eyes) == {rgb(appearance.SCLERA), rgb(appearance.IRIS), rgb(appearance.PUPIL)}
    interior = appearance.mouth_interior(open_head.template, lips)
    assert len(interior) > 50 and not set(interior) & set(lips), "the open head's mouth bag, not the lips"
    assert classes(colours, interior) == {rgb(appearance.MOUTH)}
    others = np.setdiff1d(np.arange(open_head.num_vertices), np.concatenate([lips, eyes, interior]))
    assert classes(colours, others) == {rgb(appearance.SKIN)}


def test_each_eye_has_its_pupil_in_front_of_its_own_joint(open_head):
    colours = appearance.vertex_colours(open_head)
    eyes = open_head.regions["eyes"]
    pupils = eyes[np.all(np.isclose(colours[eyes, :3], appearance.PUPIL), axis=1)]
    for role in ("eye_left", "eye_right"):
        centre = open_head.joints[open_head.joint_names.index(open_head.joint_roles[role])]
        near = pupils[np.linalg.norm(open_head.template[pupils] - centre, axis=1) < 0.03]
        assert len(near) > 0, f"{role} has a pupil"
        assert np.all(open_head.template[near, 1] < centre[1]), "in front (-Y) of the eye's centre"


def test_a_flame_head_is_coloured_too(tmp_path):
    head = import_flame(write_flame_npz(tmp_path / "flame.npz"), n_expressions=10)
    colours = appearance.vertex_colours(head)
    # the fixture's eyeballs are coarse spheres: no vertex falls inside the pupil's 12 degrees
    assert classes(colours, head.regions["eyes"]) >= {rgb(appearance.SCLERA), rgb(appearance.IRIS)}
    assert classes(colours, head.regions["lips"]) == {rgb(appearance.LIPS)}
