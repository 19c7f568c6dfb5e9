"""Large pallets: patches are read when used, not held; a patchset is streamed one patch at a time.

The memory tests trace the Python heap (`tracemalloc`) while a pallet is read again (a scan's
resume: its schema checks cached, whose jsonschema machinery alone peaks at ~20 MB): parsing a
whole patchset would hold several times the file; streaming holds about one patch.
"""

from __future__ import annotations

import gzip
import json
import shutil
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from faasctl.exceptions import PalletError
from faasctl.pallets.load import StoredPatch, load_pallet, values_from_name, workspace_digest
from faasctl.scan.runner import Scan

TINY = Path(__file__).resolve().parent / "data" / "tiny_record" / "RegionA"


def _signal(size: int, scale: float) -> list[dict[str, Any]]:
    """A patch adding one signal sample to channel 0 of the tiny region, padded to about ``size`` bytes."""
    background = json.loads((TINY / "BkgOnly.json").read_text())
    bins = len(background["observations"][0]["data"])
    padding = [{"op": "test", "path": "/version", "value": "1.0.0"}] * (size // 50)
    sample = {"name": "signal", "data": [scale] * bins,
              "modifiers": [{"name": "mu_SIG", "type": "normfactor", "data": None}]}
    return [*padding, {"op": "add", "path": "/channels/0/samples/0", "value": sample}]


def _patchset_folder(folder: Path, count: int, size: int, *, gz: bool = False) -> Path:
    background = json.loads((TINY / "BkgOnly.json").read_text())
    patchset = {
        "metadata": {"description": "many patches", "digests": {"sha256": workspace_digest(background)},
                     "labels": ["m1", "m2"], "references": {"hepdata": "ins0000000"}},
        "patches": [{"metadata": {"name": f"sig_{100 + i}_{i}", "values": [100 + i, i]}, "patch": _signal(size, 1.0 + i)}
                    for i in range(count)],
        "version": "1.0.0",
    }
    folder.mkdir(parents=True)
    shutil.copy(TINY / "BkgOnly.json", folder / "BkgOnly.json")
    text = json.dumps(patchset)
    if gz:
        (folder / "patchset.json.gz").write_bytes(gzip.compress(text.encode()))
    else:
        (folder / "patchset.json").write_text(text)
    return folder


def _traced_peak(function: Any) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        result = function()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(autouse=True)
def _own_validation_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("FAASCTL_VALIDATED_CACHE", "1")


@pytest.mark.parametrize("gz", [False, True], ids=["json", "gzip"])
def test_streamed_patchset_holds_what_the_file_says(tmp_path, gz):
    folder = _patchset_folder(tmp_path / "ps", 5, 2000, gz=gz)
    raw = json.loads(gzip.decompress((folder / "patchset.json.gz").read_bytes()) if gz else (folder / "patchset.json").read_text())
    pallet = load_pallet(folder)
    assert list(pallet.patches) == [e["metadata"]["name"] for e in raw["patches"]]
    for entry in raw["patches"]:
        patch = pallet.patches[entry["metadata"]["name"]]
        assert isinstance(patch, StoredPatch)
        assert patch.values == tuple(float(v) for v in entry["metadata"]["values"])
        assert patch.operations == entry["patch"]
        assert patch.loaded().operations == entry["patch"] and not isinstance(patch.loaded(), StoredPatch)


def test_streamed_patches_travel_to_other_processes(tmp_path):
    """A notebook hands patches to a process pool: they pickle as plain patches with their operations."""
    import concurrent.futures as cf
    import multiprocessing
    import pickle

    pallet = load_pallet(_patchset_folder(tmp_path / "ps", 3, 200))
    for patch in pallet.patches.values():
        copy = pickle.loads(pickle.dumps(patch))
        assert type(copy) is not StoredPatch and copy == patch.loaded()
    with cf.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert list(pool.map(len, [p.operations for p in pallet.patches.values()])) == \
            [len(p.operations) for p in pallet.patches.values()]
        first = next(iter(pallet.patches.values()))
        assert pool.submit(repr, first).result() == repr(first.loaded())


@pytest.mark.pallets
def test_streamed_1lbb_equals_the_parsed_file(pallet_1lbb):
    """Every number of every real patch survives the streaming parser and the spool exactly."""
    raw = json.loads(gzip.decompress((pallet_1lbb / "patchset.json.gz").read_bytes()))
    pallet = load_pallet(pallet_1lbb)
    assert len(pallet) == len(raw["patches"]) == 125
    for entry in raw["patches"]:
        assert pallet.patches[entry["metadata"]["name"]].operations == entry["patch"]


def test_reading_a_patchset_holds_about_one_patch(tmp_path):
    size = 100_000
    peaks, files = {}, {}
    for count in (20, 80):
        folder = _patchset_folder(tmp_path / f"ps{count}", count, size)
        files[count] = (folder / "patchset.json").stat().st_size
        assert len(load_pallet(folder)) == count  # checked against the schema, once
        pallet, peaks[count] = _traced_peak(lambda: load_pallet(folder))
        assert len(pallet) == count
    # the peak is a few patches (those of one read buffer), whatever their number
    assert peaks[80] < 1.5 * peaks[20], peaks
    # json.loads of the file alone would peak at several times its size
    assert peaks[80] < files[80] / 2, (peaks, files)


def test_patch_files_are_not_held(tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    shutil.copy(TINY / "BkgOnly.json", folder / "BkgOnly.json")
    for i in range(30):
        (folder / f"patch.sig_{100 + i}_{i}.json").write_text(json.dumps(_signal(100_000, 1.0 + i)))
    total = sum(f.stat().st_size for f in folder.glob("patch.*.json"))
    assert len(load_pallet(folder)) == 30  # checked against the schema, once
    tracemalloc.start()
    try:
        pallet = load_pallet(folder)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held < total / 10, f"the pallet holds {held} bytes of {total} bytes of patch files"
    patch = pallet.patches["sig_105_5"]
    assert patch.values == values_from_name("sig_105_5")
    assert patch.operations == json.loads((folder / "patch.sig_105_5.json").read_text())


def test_streamed_schema_error_names_the_patch(tmp_path):
    folder = _patchset_folder(tmp_path / "ps", 6, 100)
    patchset = json.loads((folder / "patchset.json").read_text())
    patchset["patches"][4]["patch"][-1]["op"] = "frobnicate"
    (folder / "patchset.json").write_text(json.dumps(patchset))
    with pytest.raises(PalletError) as excinfo:
        load_pallet(folder)
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith(f"{folder / 'patchset.json'}: invalid patchset at patches[4].patch"), message


def test_scan_selects_and_resumes_streamed_patches(tmp_path):
    folder = _patchset_folder(tmp_path / "ps", 8, 100)
    with Scan(folder, tmp_path / "out", patches=["sig_103_3", "sig_101_1"]) as scan:
        assert [p.name for p in scan.todo] == ["sig_103_3", "sig_101_1"]
        assert set(scan.digests) == {"sig_103_3", "sig_101_1"}
