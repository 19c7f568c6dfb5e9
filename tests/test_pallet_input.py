"""Hostile or broken pallet input: one line naming the file and field (exit 2), never a hang or a traceback."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from faasctl.cli.main import app
from faasctl.exceptions import PalletError
from faasctl.pallets import load as pallet_module
from faasctl.pallets.load import load_pallet

runner = CliRunner()


@pytest.fixture
def pallet(tmp_path, example_pallet) -> Path:
    target = tmp_path / "pallet"
    shutil.copytree(example_pallet, target)
    return target


def _edit(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(PalletError) as excinfo:
        load_pallet(path, **kwargs)
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_values_that_are_strings(pallet):
    _edit(pallet / "patchset.json", lambda d: d["patches"][1]["metadata"].__setitem__("values", ["300", 100]))
    assert _error(pallet).endswith("patchset.json: patches[1].metadata.values[0] is '300', not a number")
    result = runner.invoke(app, ["fit", str(pallet), "--out", str(pallet.parent / "out")])
    assert result.exit_code == 2 and "values[0] is '300', not a number" in " ".join(result.output.split())
    assert "Traceback" not in result.output and not (pallet.parent / "out").exists()


def test_values_count_must_match_the_labels(pallet):
    _edit(pallet / "patchset.json", lambda d: d["patches"][2]["metadata"].__setitem__("values", [300, 100, 5]))
    assert "patchset.json: patches[2].metadata.values has 3 values but metadata.labels has 2 (m1, m2)" in _error(pallet)


def _set(doc, path, value):
    *parents, last = path
    for key in parents:
        doc = doc[key]
    doc[last] = value


@pytest.mark.parametrize(
    ("file", "path", "value", "field"),
    [
        ("BkgOnly.json", ["observations", 0, "data", 0], float("nan"), "observations[0].data[0] is NaN"),
        ("patchset.json", ["patches", 0, "patch", 0, "value", "data", 1], float("inf"),
         "patches[0].patch[0].value.data[1] is Infinity"),
        ("patchset.json", ["patches", 0, "metadata", "values", 0], -float("inf"), "patches[0].metadata.values[0] is -Infinity"),
    ],
    ids=["observation", "signal", "values"],
)
def test_non_finite_numbers_name_their_field(pallet, file, path, value, field):
    _edit(pallet / file, lambda d: _set(d, path, value))  # json.dumps writes NaN / Infinity, as Python's parser reads
    assert f"{file}: {field}: numbers must be finite" in _error(pallet, ignore_digest=True)


def test_duplicate_labels(example_pallet, tmp_path):
    result = runner.invoke(app, ["fit", str(example_pallet), "--labels", "m,m", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert "--labels 'm,m': m given twice" in " ".join(result.output.split())


def _load_in_thread(path: Path) -> BaseException | None:
    """load_pallet(path) with a bound on how long we wait: a blocking open must fail the test, not hang it."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            load_pallet(path)
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            outcome.append(err)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "load_pallet blocked"
    return outcome[0]


def test_background_that_is_a_symlink_to_dev_zero(pallet):
    (pallet / "BkgOnly.json").unlink()
    (pallet / "BkgOnly.json").symlink_to("/dev/zero")
    err = _load_in_thread(pallet)
    assert isinstance(err, PalletError) and str(err).endswith("BkgOnly.json: refusing: a device, not a regular file")


def test_background_that_is_a_fifo(pallet):
    (pallet / "BkgOnly.json").unlink()
    os.mkfifo(pallet / "BkgOnly.json")
    err = _load_in_thread(pallet)
    assert isinstance(err, PalletError) and str(err).endswith("BkgOnly.json: refusing: a FIFO, not a regular file")


def test_pallet_that_is_dev_zero():
    err = _load_in_thread(Path("/dev/zero"))
    assert isinstance(err, PalletError) and "/dev/zero: refusing: a device, not a regular file" in str(err)


def _patch_member(i: int, size: int) -> tuple[str, bytes]:
    return f"rec/patch.sig_{i}_{i}.json", b" " * (size - 2) + b"[]"


def test_zip_of_many_near_limit_members_is_refused_before_decompressing(tmp_path, example_pallet, monkeypatch):
    monkeypatch.setattr(pallet_module, "MAX_MEMBER_BYTES", 1 << 20)
    monkeypatch.setattr(pallet_module, "MAX_TOTAL_BYTES", 4 << 20)
    archive = tmp_path / "many.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("rec/BkgOnly.json", (example_pallet / "BkgOnly.json").read_text())
        for i in range(8):
            zf.writestr(*_patch_member(i, (1 << 20) - 10))
    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, *a, **k: opened.append(a[0]) or real_open(self, *a, **k))
    message = _error(archive)
    assert "declares more than 4194304 bytes in all" in message
    assert opened == []  # refused from the central directory, nothing decompressed


def test_tar_member_over_the_total_is_refused_from_its_header(tmp_path, example_pallet, monkeypatch):
    monkeypatch.setattr(pallet_module, "MAX_MEMBER_BYTES", 1 << 20)
    monkeypatch.setattr(pallet_module, "MAX_TOTAL_BYTES", 4 << 20)
    archive = tmp_path / "many.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in [("rec/BkgOnly.json", (example_pallet / "BkgOnly.json").read_bytes()),
                           *(_patch_member(i, (1 << 20) - 10) for i in range(8))]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    extracted = []
    real = tarfile.TarFile.extractfile
    monkeypatch.setattr(tarfile.TarFile, "extractfile", lambda self, m: extracted.append(m.name) or real(self, m))
    message = _error(archive)
    assert "refusing archive at 'rec/patch.sig_3_3.json': it declares more than 4194304 bytes in all" in message
    assert "rec/patch.sig_3_3.json" not in extracted  # refused before it was decompressed
