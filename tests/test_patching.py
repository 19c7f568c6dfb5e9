"""apply_patch_shared must agree with the jsonpatch library and never mutate its inputs."""

from __future__ import annotations

import copy
import json

import jsonpatch
import pytest

from faasctl.pallets.patching import apply_patch_shared

DOC = {"a": {"b": [1, 2, {"c": 3}]}, "d": [[1], [2]], "e": "x"}

CASES = [
    [{"op": "add", "path": "/a/b/1", "value": 9}],
    [{"op": "add", "path": "/a/b/-", "value": {"n": 1}}, {"op": "replace", "path": "/a/b/3/n", "value": 2}],
    [{"op": "add", "path": "/f", "value": [1]}],
    [{"op": "remove", "path": "/a/b/0"}],
    [{"op": "replace", "path": "/d/1/0", "value": 5}],
    [{"op": "move", "from": "/d/0", "path": "/a/moved"}],
    [{"op": "copy", "from": "/a/b/2", "path": "/d/-"}, {"op": "replace", "path": "/d/2/c", "value": 0}],
    [{"op": "test", "path": "/e", "value": "x"}, {"op": "remove", "path": "/e"}],
]

BAD = [
    [{"op": "add", "path": "/nope/x", "value": 1}],
    [{"op": "remove", "path": "/a/b/7"}],
    [{"op": "replace", "path": "/missing", "value": 1}],
    [{"op": "test", "path": "/e", "value": "y"}],
    [{"op": "add", "path": "/a/b/x", "value": 1}],
    [{"op": "frobnicate", "path": "/e"}],
]


@pytest.mark.parametrize("ops", CASES)
def test_agrees_with_jsonpatch_and_mutates_nothing(ops):
    doc, ops_before = copy.deepcopy(DOC), copy.deepcopy(ops)
    result = apply_patch_shared(doc, ops)
    assert result == jsonpatch.apply_patch(DOC, ops)
    assert doc == DOC and ops == ops_before


@pytest.mark.parametrize("ops", BAD)
def test_conflicts_raise_like_jsonpatch(ops):
    with pytest.raises((jsonpatch.JsonPatchException, jsonpatch.JsonPointerException)):
        jsonpatch.apply_patch(DOC, ops)
    with pytest.raises((jsonpatch.JsonPatchException, jsonpatch.JsonPointerException)):
        apply_patch_shared(DOC, ops)


def test_example_pallet_patches(example_pallet):
    background = json.loads((example_pallet / "BkgOnly.json").read_text())
    snapshot = json.dumps(background)
    for entry in json.loads((example_pallet / "patchset.json").read_text())["patches"]:
        assert apply_patch_shared(background, entry["patch"]) == jsonpatch.apply_patch(background, entry["patch"])
    assert json.dumps(background) == snapshot
