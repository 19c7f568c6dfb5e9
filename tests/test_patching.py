"""`apply_patch` must agree with the jsonpatch library, never mutate its inputs, and name what does not apply."""

from __future__ import annotations

import copy
import json

import jsonpatch
import pytest

from faasctl.exceptions import PatchError
from faasctl.pallets import Patch, apply_patch, load_pallet

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
    ([{"op": "add", "path": "/nope/x", "value": 1}], "operation [0] (add /nope/x): member 'nope' does not exist"),
    ([{"op": "test", "path": "/e", "value": "x"}, {"op": "remove", "path": "/a/b/7"}],
     "operation [1] (remove /a/b/7): index 7 is out of range (the array has 3 items)"),
    ([{"op": "replace", "path": "/missing", "value": 1}], "operation [0] (replace /missing): member 'missing'"),
    ([{"op": "test", "path": "/e", "value": "y"}], "operation [0] (test /e): test failed"),
    ([{"op": "add", "path": "/a/b/x", "value": 1}], "operation [0] (add /a/b/x): 'x' is not an array index"),
    ([{"op": "frobnicate", "path": "/e"}], "operation [0] (frobnicate /e): unknown operation 'frobnicate'"),
    ([{"op": "add", "path": "/e"}], "operation [0] (add /e): the operation has no 'value'"),
    ([{"op": "move", "from": "/a", "path": "/a/b/0"}], "cannot move /a into itself"),
    ([{"op": "add", "path": "e", "value": 1}], "operation [0] (add e): Location must start with /"),
]


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("ops", CASES)
def test_agrees_with_jsonpatch_and_mutates_nothing(ops, shared):
    doc, ops_before = copy.deepcopy(DOC), copy.deepcopy(ops)
    result = apply_patch(doc, Patch("p", (), ops), shared=shared)
    assert result == jsonpatch.apply_patch(DOC, ops)
    assert doc == DOC and ops == ops_before


@pytest.mark.parametrize(("ops", "message"), BAD)
def test_conflicts_name_the_patch_and_the_operation(ops, message):
    with pytest.raises((jsonpatch.JsonPatchException, jsonpatch.JsonPointerException)):
        jsonpatch.apply_patch(DOC, ops)  # the library refuses them too
    with pytest.raises(PatchError) as excinfo:
        apply_patch(DOC, Patch("sig_1", (), ops, source="patch.sig_1.json"))
    assert str(excinfo.value).startswith("patch.sig_1.json: patch 'sig_1' does not apply to the background: ")
    assert message in str(excinfo.value)


def test_shared_result_shares_what_the_patch_leaves_alone():
    patch = Patch("p", (), [{"op": "replace", "path": "/d/1/0", "value": 5}])
    shared = apply_patch(DOC, patch, shared=True)
    assert shared["a"] is DOC["a"] and shared["d"][0] is DOC["d"][0] and shared["d"] is not DOC["d"]
    private = apply_patch(DOC, patch)
    assert private["a"] == DOC["a"] and private["a"] is not DOC["a"]
    private["a"]["b"].append(4)  # the default result is the caller's to change
    assert DOC["a"]["b"] == [1, 2, {"c": 3}]


def test_example_pallet_patches(example_pallet):
    pallet = load_pallet(example_pallet)
    snapshot = json.dumps(pallet.background)
    for patch in pallet.patches.values():
        want = jsonpatch.apply_patch(pallet.background, patch.operations)
        assert apply_patch(pallet.background, patch, shared=True) == want
        assert pallet.workspace_spec(patch) == want
    assert json.dumps(pallet.background) == snapshot
