"""The synthetic scene's hard categories: each renders its situation, deterministically, without
changing the clean scene; the hard ones really are harder for zxing-cpp."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qrgate.decoding.zxing import ZxingDecoder
from qrgate.frames.scene_effects import CATEGORIES, HARD_CATEGORIES
from qrgate.frames.synthetic import SyntheticGate, Visit, load_script

PAYLOAD = "QRG1:category-test:" + "c" * 200


def code_frames(category: str, seed: int = 4, visits: int = 3) -> tuple[SyntheticGate, list[np.ndarray]]:
    script = [Visit(f"{PAYLOAD}{k}", dwell_s=1.0, gap_s=0.1, category=category) for k in range(visits)]
    scene = SyntheticGate(script, seed=seed)
    frames = []
    for index in range(scene.frame_count):
        if scene.truth(index) is not None:
            grey = np.empty((scene.height, scene.width), np.uint8)
            scene.render(index, grey)
            frames.append(grey)
    return scene, frames


def read_rate(category: str) -> float:
    _scene, frames = code_frames(category)
    decoder = ZxingDecoder()
    return sum(bool(decoder.decode(f)) for f in frames) / len(frames)


def test_categories_imply_their_medium_and_reject_the_other():
    assert Visit("x").medium == "phone" and Visit("x").category == "clean"
    assert Visit("x", category="glare").medium == "phone"
    assert Visit("x", category="damage").medium == "paper"
    assert Visit("x", category="blur", medium="paper").medium == "paper"
    with pytest.raises(ValueError, match="shown on paper"):
        Visit("x", category="damage", medium="phone")
    with pytest.raises(ValueError, match="category must be one of"):
        Visit("x", category="fog")


def test_load_script_accepts_categories(tmp_path):
    path = tmp_path / "script.json"
    path.write_text(json.dumps([{"payload": "a", "category": "motion"}, {"payload": "b", "category": "paper"}]))
    assert [(v.category, v.medium) for v in load_script(path)] == [("motion", "phone"), ("paper", "paper")]


def test_the_clean_scene_is_the_same_whatever_other_visits_do():
    # A clean visit renders the same frames next to any category: effects draw from their own stream.
    clean = Visit(PAYLOAD, dwell_s=0.5, gap_s=0.1)
    a = SyntheticGate([clean, Visit("other", category="clean")], seed=2)
    b = SyntheticGate([clean, Visit("other", category="damage")], seed=2)
    first, second = np.empty((480, 640), np.uint8), np.empty((480, 640), np.uint8)
    for index in range(a.frame_count // 2):
        a.render(index, first)
        b.render(index, second)
        assert np.array_equal(first, second)


@pytest.mark.parametrize("category", [c for c in CATEGORIES if c != "clean"])
def test_each_category_changes_the_code_frames_deterministically(category):
    script = [Visit(PAYLOAD, dwell_s=1.0, gap_s=0.2, medium="paper" if category in ("paper", "damage") else None)]
    plain = SyntheticGate(script, seed=7)
    harder = SyntheticGate([Visit(PAYLOAD, dwell_s=1.0, gap_s=0.2, category=category)], seed=7)
    again = SyntheticGate([Visit(PAYLOAD, dwell_s=1.0, gap_s=0.2, category=category)], seed=7)
    a, b, c = (np.empty((480, 640), np.uint8) for _ in range(3))
    differing = 0
    for index in range(plain.frame_count):
        plain.render(index, a)
        harder.render(index, b)
        again.render(index, c)
        assert np.array_equal(b, c)
        if plain.truth(index) is None:
            assert np.array_equal(a, b)  # the empty scene is untouched
        else:
            differing += not np.array_equal(a, b)
    assert differing >= 10


def test_hard_categories_are_harder_for_zxing_but_not_hopeless():
    clean = read_rate("clean")
    for category in HARD_CATEGORIES:
        rate = read_rate(category)
        assert 0.05 < rate < clean, (category, rate, clean)
