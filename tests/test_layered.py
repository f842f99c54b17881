"""Layered mappings (feedsvc.layered): each version equal to a dict edited alike, and
every earlier version unchanged by the later ones."""

from __future__ import annotations

import random

from feedsvc.layered import Layered


def test_versions_match_a_dict_and_never_change_once_made() -> None:
    rng = random.Random(3)
    model = {f"k{i}": i for i in range(500)}
    current = Layered.over(dict(model))
    history = [(current, dict(model))]
    for step in range(400):
        draft = current.edit()
        for _ in range(rng.randint(1, 12)):
            key = f"k{rng.randint(0, 700)}"
            if rng.random() < 0.4:
                assert draft.pop(key, "none") == model.pop(key, "none")
            else:
                draft[key] = model[key] = step
            assert (key in draft) == (key in model) and draft.get(key) == model.get(key)
        assert len(draft) == len(model)
        current = draft.done()
        history.append((current, dict(model)))
        assert dict(current) == model and len(current) == len(model)
        assert sorted(current) == sorted(model) and current == model
    for version, seen in history:  # later edits shared their base, never wrote to it
        assert dict(version.items()) == seen and len(version) == len(seen)
        assert all(version[k] == v for k, v in seen.items())
        assert "k9999" not in version and version.get("k9999", 7) == 7


def test_the_layer_is_merged_into_a_new_base_when_it_grows() -> None:
    base = {i: i for i in range(6400)}
    current = Layered.over(base)
    for i in range(300):
        draft = current.edit()
        draft[i] = -i
        current = draft.done()
    assert len(current._top) <= 6400 // 32 and current._base is not base
    assert base == {i: i for i in range(6400)}
    assert dict(current) == {i: (-i if i < 300 else i) for i in range(6400)}
