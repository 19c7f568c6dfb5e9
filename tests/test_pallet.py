"""Reading pallets: both HEPData layouts, regions, labels, digests, bad input, unsafe archives.

Data: ``tests/data/tiny_record`` (two regions, one ``patch.NAME.json`` per point, made by
``tests/data/make_tiny_record.py``), ``examples/simple`` (a patchset), and, marked
``pallets``, the ATLAS staus record exactly as HEPData publishes it. Malicious archives
are made here, in ``tmp_path``.
"""

from __future__ import annotations

import concurrent.futures as cf
import gzip
import io
import json
import os
import shutil
import tarfile
import uuid
import zipfile
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
from typer.testing import CliRunner

from conftest import EXAMPLE, assert_agrees, pyhf_reference
from faasctl.pallets import load as pallet_module
from faasctl.study import pyhf_hypotest
from faasctl.cli.main import app
from faasctl.scan.client import FitClient
from faasctl.exceptions import PalletError, PatchError
from faasctl.pallets.load import LAYOUT_PATCH_FILES, LAYOUT_PATCHSET, load_pallet, values_from_name, workspace_digest

TINY = Path(__file__).resolve().parent / "data" / "tiny_record"
runner = CliRunner()


def tar_folder(folder: Path, archive: Path, arcname: str | None = None) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=arcname or folder.name)
    return archive


def write_tar(archive: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return archive


def member(name: str, data: bytes | None = None, **attrs: Any) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    for key, value in attrs.items():
        setattr(info, key, value)
    return info, data


def good_members(prefix: str = "rec/RegionA") -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """A valid one-region record, to which each test adds one bad member."""
    return [
        member(f"{prefix}/BkgOnly.json", (TINY / "RegionA" / "BkgOnly.json").read_bytes()),
        member(f"{prefix}/patch.sig_300_100.json", (TINY / "RegionA" / "patch.sig_300_100.json").read_bytes()),
    ]


def one_line_error(excinfo: pytest.ExceptionInfo[BaseException], *parts: str) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, message
    return message


@pytest.fixture
def region_a(tmp_path: Path) -> Path:
    """A writable copy of RegionA, for tests that break a file."""
    return Path(shutil.copytree(TINY / "RegionA", tmp_path / "RegionA"))


def as_patchset(region: Path, out: Path, *, digest: str | None = None) -> Path:
    """The same region in the patchset layout (what pyhf's patchset schema describes)."""
    background = json.loads((region / "BkgOnly.json").read_text())
    patches = []
    for file in sorted(region.glob("patch.*.json")):
        name = file.name.removeprefix("patch.").removesuffix(".json")
        patches.append({"metadata": {"name": name, "values": list(values_from_name(name))}, "patch": json.loads(file.read_text())})
    patchset = {
        "metadata": {
            "description": "tiny record as a patchset",
            "digests": {"sha256": digest or workspace_digest(background)},
            "labels": ["m1", "m2"],
            "references": {"hepdata": "ins0000000"},
        },
        "patches": patches,
        "version": "1.0.0",
    }
    out.mkdir(parents=True)
    (out / "BkgOnly.json").write_text(json.dumps(background))
    (out / "patchset.json").write_text(json.dumps(patchset))
    return out


# --- layouts and regions ---------------------------------------------------------------------


def test_patch_files_layout_from_a_record_folder():
    pallet = load_pallet(TINY, region="RegionA")
    assert pallet.layout == LAYOUT_PATCH_FILES
    assert pallet.region == "RegionA"
    assert pallet.regions == ["RegionA", "RegionB"]
    assert list(pallet.patches) == ["sig_300_100", "sig_300_200", "sig_400_100", "sig_400_200"]
    assert pallet.patches["sig_400_200"].values == (400.0, 200.0)
    assert pallet.labels == ["value0", "value1"]
    assert pallet.digest == workspace_digest(json.loads((TINY / "RegionA" / "BkgOnly.json").read_text()))
    assert pallet.recorded_digest is None
    patch = pallet.patches["sig_300_100"]
    assert patch.operations == json.loads((TINY / "RegionA" / "patch.sig_300_100.json").read_text())
    assert patch.source == str(TINY / "RegionA" / "patch.sig_300_100.json")


def test_one_region_folder_and_its_name():
    pallet = load_pallet(TINY / "RegionB")
    assert pallet.region is None and pallet.regions == ["."]
    assert set(pallet.patches) == {"sig_300_100", "sig_400_100", "sig_500_100", "sig_600_100"}
    assert len(load_pallet(TINY / "RegionB", region="RegionB")) == 4  # the folder is the region asked for


def test_several_regions_and_none_chosen_lists_them():
    with pytest.raises(PalletError) as excinfo:
        load_pallet(TINY)
    one_line_error(excinfo, str(TINY), "several regions", "--region", "RegionA, RegionB")
    with pytest.raises(PalletError) as excinfo:
        load_pallet(TINY, region="RegionC")
    one_line_error(excinfo, "no region 'RegionC'", "RegionA, RegionB")


def test_archive_as_downloaded_equals_the_folder(tmp_path):
    archive = tar_folder(TINY, tmp_path / "tiny_likelihoods.tar.gz")
    folder = load_pallet(TINY, region="RegionA")
    for region in ("RegionA", "tiny_record/RegionA"):
        packed = load_pallet(archive, region=region)
        assert packed.region == "RegionA"
        assert packed.regions == ["RegionA", "RegionB"]
        assert packed.digest == folder.digest
        assert packed.patches == folder.patches
        assert packed.background_file == f"{archive}:tiny_record/RegionA/BkgOnly.json"
        assert packed.patches["sig_300_100"].source == f"{archive}:tiny_record/RegionA/patch.sig_300_100.json"


@pytest.mark.parametrize("outer", ["zip", "tar.gz"])
def test_nested_archive(tmp_path, outer):
    """A download that holds the likelihood archive (e.g. a whole HEPData submission)."""
    inner = tar_folder(TINY, tmp_path / "likelihoods.tar.gz")
    archive = tmp_path / f"submission.{outer}"
    if outer == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            zf.write(inner, "submission/likelihoods.tar.gz")
            zf.writestr("submission/README.md", "a record")
    else:
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(inner, "likelihoods.tar.gz")
    pallet = load_pallet(archive, region="RegionB")
    assert pallet.region == "RegionB" and len(pallet) == 4
    assert "likelihoods.tar.gz/tiny_record/RegionB/BkgOnly.json" in pallet.background_file


def test_gzipped_files(tmp_path, region_a):
    for file in list(region_a.glob("*.json")):
        file.with_name(file.name + ".gz").write_bytes(gzip.compress(file.read_bytes()))
        file.unlink()
    pallet = load_pallet(region_a)
    assert pallet.patches == load_pallet(TINY / "RegionA").patches
    assert pallet.background_file.endswith("BkgOnly.json.gz")


def test_patchset_layout_equals_patch_files(tmp_path):
    patchset = load_pallet(as_patchset(TINY / "RegionA", tmp_path / "ps"))
    files = load_pallet(TINY / "RegionA")
    assert patchset.layout == LAYOUT_PATCHSET and patchset.labels == ["m1", "m2"]
    assert patchset.recorded_digest == patchset.digest == files.digest
    assert {p.name: p.values for p in patchset.patches.values()} == {p.name: p.values for p in files.patches.values()}
    for name in files.patches:
        assert patchset.workspace_spec(patchset.patches[name]) == files.workspace_spec(files.patches[name])


def test_streamed_patch_that_does_not_apply_fails_only_when_chosen(tmp_path):
    """A streamed patchset's patches are checked against the background as they are read: one that
    does not apply fails the scans that choose it (naming it, its file and the operation), not the pallet."""
    from faasctl.scan.runner import check_patches

    folder = as_patchset(TINY / "RegionA", tmp_path / "ps")
    patchset = json.loads((folder / "patchset.json").read_text())
    patchset["patches"][0]["patch"][0]["path"] = "/channels/9/samples/0"
    (folder / "patchset.json").write_text(json.dumps(patchset))
    pallet = load_pallet(folder)
    bad, *good = pallet.select()
    assert bad.checked and bad.problem is not None and all(p.checked and p.problem is None for p in good)
    check_patches(pallet, good)
    with pytest.raises(PatchError) as excinfo:
        check_patches(pallet, [bad])
    one_line_error(excinfo, str(folder / "patchset.json"), repr(bad.name), "does not apply", "operation [0] (")
    # the packed operations are the patch's, as sent to the workers
    assert pallet_module.unpack_operations(bad.packed()) == patchset["patches"][0]["patch"]


def test_example_patchset(example_pallet):
    pallet = load_pallet(example_pallet)
    assert pallet.layout == LAYOUT_PATCHSET and len(pallet) == 12 and pallet.labels == ["m1", "m2"]


def test_patch_files_cls_equal_pyhf_cls_semantics():
    """``pyhf cls BkgOnly.json -p patch.NAME.json``: the patch is applied to the model spec."""
    import pyhf

    pallet = load_pallet(TINY / "RegionA")
    patch = pallet.patches["sig_300_200"]
    workspace = pyhf.Workspace(json.loads((TINY / "RegionA" / "BkgOnly.json").read_text()))
    model = workspace.model(
        patches=[json.loads((TINY / "RegionA" / "patch.sig_300_200.json").read_text())],
        modifier_settings={"normsys": {"interpcode": "code4"}, "histosys": {"interpcode": "code4p"}},
    )
    obs, exp = pyhf.infer.hypotest(1.0, workspace.data(model), model, test_stat="qtilde", return_expected_set=True)
    with cf.ThreadPoolExecutor(1) as executor:
        (result,) = FitClient(executor).scan(pallet, [patch.name])
    assert result.ok, result.error
    assert_agrees(result, (float(obs), [float(v) for v in exp]), patch.name)


@pytest.mark.parametrize(
    "name, values",
    [
        ("DS_400_40_Staus", (400.0, 40.0)),
        ("sbottom_1300_205_60", (1300.0, 205.0, 60.0)),
        ("C1N2_Wh_hbb_1000_0", (1000.0, 0.0)),
        ("GG_1p5_60", (1.5, 60.0)),
        ("signal", ()),
    ],
)
def test_values_from_name(name, values):
    assert values_from_name(name) == values


def test_patch_file_name_forms(tmp_path, region_a):
    (region_a / "patch.sig_300_100.json").rename(region_a / "patch_sig_300_100.json")
    assert "sig_300_100" in load_pallet(region_a).patches
    shutil.copy(region_a / "patch_sig_300_100.json", region_a / "patch.sig_300_100.json")
    with pytest.raises(PalletError) as excinfo:
        load_pallet(region_a)
    one_line_error(excinfo, "patch name 'sig_300_100' is not unique")


# --- labels ----------------------------------------------------------------------------------


def test_labels(example_pallet):
    assert load_pallet(TINY, region="RegionA", labels="m_stop, m_lsp").labels == ["m_stop", "m_lsp"]
    assert load_pallet(TINY, region="RegionA", labels=["a", "b"]).labels == ["a", "b"]
    assert load_pallet(example_pallet, labels="mC1,mN1").labels == ["mC1", "mN1"]
    with pytest.raises(PalletError) as excinfo:
        load_pallet(TINY, region="RegionA", labels="m1,m2,m3")
    one_line_error(excinfo, "--labels m1,m2,m3", "3 labels", "have 2 values", "sig_300_100: 300, 100")
    with pytest.raises(PalletError) as excinfo:
        load_pallet(TINY, region="RegionA", labels="m1,")
    one_line_error(excinfo, "--labels")


# --- digests ---------------------------------------------------------------------------------


def test_digest_mismatch(tmp_path):
    folder = as_patchset(TINY / "RegionA", tmp_path / "ps", digest="0" * 64)
    with pytest.raises(PalletError) as excinfo:
        load_pallet(folder)
    one_line_error(excinfo, str(folder / "patchset.json"), "metadata.digests.sha256", "0" * 64, "--ignore-digest")
    pallet = load_pallet(folder, ignore_digest=True)
    assert pallet.recorded_digest == "0" * 64 != pallet.digest


# --- bad input: one line naming the file and the field ---------------------------------------


def test_missing_things(tmp_path, region_a):
    with pytest.raises(PalletError) as excinfo:
        load_pallet(tmp_path / "nowhere")
    one_line_error(excinfo, "nowhere: no such file or folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PalletError) as excinfo:
        load_pallet(tmp_path / "empty")
    one_line_error(excinfo, "empty: no BkgOnly.json found")
    for file in region_a.glob("patch.*"):
        file.unlink()
    with pytest.raises(PalletError) as excinfo:
        load_pallet(region_a)
    one_line_error(excinfo, str(region_a), "no patchset.json found, and no patch.NAME.json files beside BkgOnly.json")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(PalletError) as excinfo:
        load_pallet(tmp_path / "notes.txt")
    one_line_error(excinfo, "notes.txt: not a pallet")


def test_invalid_json(region_a):
    (region_a / "patch.sig_300_200.json").write_text('[{"op": "add",\n "path": }]')
    with pytest.raises(PalletError) as excinfo:
        load_pallet(region_a)
    one_line_error(excinfo, str(region_a / "patch.sig_300_200.json"), "invalid JSON at line 2 column")
    (region_a / "BkgOnly.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(PalletError) as excinfo:
        load_pallet(region_a)
    one_line_error(excinfo, str(region_a / "BkgOnly.json"))


def test_invalid_gzip(region_a):
    (region_a / "BkgOnly.json").unlink()
    (region_a / "BkgOnly.json.gz").write_bytes(b"not gzip at all")
    with pytest.raises(PalletError) as excinfo:
        load_pallet(region_a)
    one_line_error(excinfo, "BkgOnly.json.gz: not a valid gzip file")


def test_schema_failures_name_the_field(tmp_path, region_a):
    background = json.loads((region_a / "BkgOnly.json").read_text())
    background["channels"][1]["samples"][0]["data"] = "forty"
    (region_a / "BkgOnly.json").write_text(json.dumps(background))
    with pytest.raises(PalletError) as excinfo:
        load_pallet(region_a)
    one_line_error(excinfo, str(region_a / "BkgOnly.json"), "invalid workspace at channels[1].samples[0].data", "'forty'")

    (region_a / "BkgOnly.json").write_text((TINY / "RegionA" / "BkgOnly.json").read_text())
    (region_a / "patch.sig_300_200.json").write_text(json.dumps([{"op": "frobnicate", "path": "/channels/0"}]))
    with pytest.raises(PalletError) as excinfo:
        load_pallet(region_a)
    one_line_error(excinfo, str(region_a / "patch.sig_300_200.json"), "invalid jsonpatch at [0]")

    folder = as_patchset(TINY / "RegionA", tmp_path / "ps")
    patchset = json.loads((folder / "patchset.json").read_text())
    del patchset["metadata"]["labels"]
    (folder / "patchset.json").write_text(json.dumps(patchset))
    with pytest.raises(PalletError) as excinfo:
        load_pallet(folder)
    one_line_error(excinfo, str(folder / "patchset.json"), "invalid patchset at metadata", "'labels' is a required property")


def test_patch_that_does_not_apply(region_a):
    ops = json.loads((region_a / "patch.sig_300_200.json").read_text())
    ops[1]["path"] = "/channels/7/samples/0"
    (region_a / "patch.sig_300_200.json").write_text(json.dumps(ops))
    pallet = load_pallet(region_a)
    with pytest.raises(PatchError) as excinfo:
        pallet.workspace_spec(pallet.patches["sig_300_200"])
    one_line_error(excinfo, str(region_a / "patch.sig_300_200.json"), "'sig_300_200'", "operation [1] (add /channels/7/samples/0)")
    assert len(str(excinfo.value)) < 400  # jsonpointer's messages quote the whole document: cut


def test_apply_patch_leaves_its_inputs_alone():
    pallet = load_pallet(TINY / "RegionB")
    before = json.dumps([pallet.background, pallet.patches["sig_600_100"].operations])
    spec = pallet.workspace_spec(pallet.patches["sig_600_100"])
    spec["channels"][0]["samples"][1]["data"][0] = -1.0  # a later change to the result ...
    assert json.dumps([pallet.background, pallet.patches["sig_600_100"].operations]) == before  # ... reaches neither


def test_unknown_patch_names():
    pallet = load_pallet(TINY, region="RegionA")
    with pytest.raises(PatchError) as excinfo:
        pallet.select(["sig_300_10", "sig_300_100"])
    one_line_error(excinfo, "RegionA/patch.*.json", "no patch named 'sig_300_10'", "did you mean", "sig_300_100")
    assert [p.name for p in pallet.select(["sig_400_100", "sig_300_100"])] == ["sig_400_100", "sig_300_100"]


# --- unsafe archives: refused, and nothing written --------------------------------------------


def snapshot(*folders: Path) -> set[Path]:
    return {p for folder in folders for p in folder.rglob("*")}


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """Run from an empty folder and check that nothing appears there, in tmp_path or in /tmp."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = snapshot(tmp_path)
    tmp_before = set(os.listdir("/tmp"))
    yield tmp_path
    assert snapshot(tmp_path) - before <= {p for p in snapshot(tmp_path) if p.suffix in (".gz", ".zip")}
    assert not any(cwd.iterdir())
    assert not {n for n in set(os.listdir("/tmp")) - tmp_before if "faasctl-evil" in n}


EVIL = f"faasctl-evil-{uuid.uuid4().hex}"


@pytest.mark.parametrize(
    "bad, why",
    [
        (member(f"/tmp/{EVIL}", b"pwned"), "absolute path"),
        (member(f"rec/../../{EVIL}", b"pwned"), "path leaves the archive"),
        (member("rec/RegionA/patch.sig_9_9.json", None, type=tarfile.SYMTYPE, linkname="/etc/passwd"), "symbolic link"),
        (member("rec/RegionA/README", None, type=tarfile.SYMTYPE, linkname="../../../../tmp"), "symbolic link"),
        (member("rec/RegionA/patch.sig_9_9.json", None, type=tarfile.LNKTYPE, linkname="rec/RegionA/BkgOnly.json"), "hard link"),
        (member("rec/RegionA/null", None, type=tarfile.CHRTYPE, devmajor=1, devminor=3), "device file"),
        (member("rec/RegionA/disk", None, type=tarfile.BLKTYPE, devmajor=8, devminor=0), "device file"),
        (member("rec/RegionA/pipe", None, type=tarfile.FIFOTYPE), "FIFO"),
    ],
    ids=["absolute", "dotdot", "symlink", "symlink-dir", "hardlink", "chardev", "blockdev", "fifo"],
)
def test_unsafe_tar_members_are_refused(sandbox, bad, why):
    archive = write_tar(sandbox / "evil.tar.gz", [*good_members(), bad])
    with pytest.raises(PalletError) as excinfo:
        load_pallet(archive)
    one_line_error(excinfo, str(archive), "refusing archive member", repr(bad[0].name), why)
    assert not Path(f"/tmp/{EVIL}").exists()


@pytest.mark.parametrize("name, why", [(f"../{EVIL}", "path leaves the archive"), (f"/{EVIL}", "absolute path")], ids=["dotdot", "absolute"])
def test_unsafe_zip_members_are_refused(sandbox, name, why):
    archive = sandbox / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("rec/BkgOnly.json", (TINY / "RegionA" / "BkgOnly.json").read_text())
        zf.writestr(zipfile.ZipInfo(name), "pwned")
    with pytest.raises(PalletError) as excinfo:
        load_pallet(archive)
    one_line_error(excinfo, "refusing archive member", why)


def test_zip_symlink_is_refused(sandbox):
    archive = sandbox / "evil.zip"
    link = zipfile.ZipInfo("rec/patch.sig_1_1.json")
    link.external_attr = (0o120777 << 16)  # S_IFLNK: how zip records a symbolic link
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("rec/BkgOnly.json", (TINY / "RegionA" / "BkgOnly.json").read_text())
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(PalletError) as excinfo:
        load_pallet(archive)
    one_line_error(excinfo, "refusing archive member 'rec/patch.sig_1_1.json'", "symbolic link")


def test_decompression_bombs_are_refused(sandbox, monkeypatch):
    monkeypatch.setattr(pallet_module, "MAX_MEMBER_BYTES", 1 << 20)
    big = b" " * (3 << 20)  # valid JSON whitespace; compresses to a few kB
    # a member whose header admits its size
    archive = write_tar(sandbox / "bomb1.tar.gz", [*good_members(), member("rec/RegionA/patch.sig_9_9.json", big)])
    with pytest.raises(PalletError) as excinfo:
        load_pallet(archive)
    one_line_error(excinfo, "refusing archive member 'rec/RegionA/patch.sig_9_9.json'", "over the 1048576 byte limit")
    # a small member that is itself gzip: only reading tells its size (the gzip trailer can lie too)
    archive = write_tar(sandbox / "bomb2.tar.gz", [*good_members(), member("rec/RegionA/patch.sig_9_9.json.gz", gzip.compress(big))])
    with pytest.raises(PalletError) as excinfo:
        load_pallet(archive)
    one_line_error(excinfo, "rec/RegionA/patch.sig_9_9.json.gz: refusing: unpacks to more than 1048576 bytes")
    # many members under the member limit, together over the total limit (a README is skipped, not read: still counted)
    monkeypatch.setattr(pallet_module, "MAX_TOTAL_BYTES", 2 << 20)
    chunk = b" " * ((1 << 20) - 1)
    archive = write_tar(sandbox / "bomb3.tar.gz", [*good_members(), *(member(f"rec/README{i}", chunk) for i in range(3))])
    with pytest.raises(PalletError) as excinfo:
        load_pallet(archive)
    one_line_error(excinfo, "refusing archive", "more than 2097152 bytes in all")


def test_folder_of_gzip_patches_has_no_total_cap(tmp_path, monkeypatch):
    """A folder's files are read one at a time: together they may unpack to more than an archive may
    (10^5 gzip patches of 1Lbb's size unpack to over 4 GiB); each file keeps its own cap."""
    monkeypatch.setattr(pallet_module, "MAX_TOTAL_BYTES", 2 << 10)
    source = load_pallet(EXAMPLE)
    folder = tmp_path / "pallet"
    folder.mkdir()
    (folder / "BkgOnly.json.gz").write_bytes(gzip.compress(json.dumps(source.background).encode()))
    for patch in source.patches.values():
        (folder / f"patch.{patch.name}.json.gz").write_bytes(gzip.compress(json.dumps(patch.operations).encode()))
    pallet = load_pallet(folder)
    assert set(pallet.patches) == set(source.patches)
    assert all(pallet.patches[n].operations == p.operations for n, p in source.patches.items())
    # an archive of the same files is refused at the same (lowered) cap
    archive = tmp_path / "pallet.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="pallet")
    with pytest.raises(PalletError, match="in all"):
        load_pallet(archive)


def test_unsafe_archive_via_the_cli_writes_nothing(sandbox):
    archive = write_tar(sandbox / "evil.tar.gz", [*good_members(), member(f"rec/../{EVIL}", b"pwned")])
    for args in (["pallet", "inspect", str(archive)], ["fit", str(archive), "--out", str(sandbox / "out"), "--no-plot"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "refusing archive member" in result.output and "path leaves the archive" in result.output
    assert not (sandbox / "out").exists()
    assert not (sandbox.parent / EVIL).exists()


def test_truncated_archive(tmp_path):
    archive = tar_folder(TINY, tmp_path / "whole.tar.gz")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(PalletError) as excinfo:
        load_pallet(cut, region="RegionA")
    one_line_error(excinfo, str(cut), "not a readable tar archive")


# --- unattended scans: broken patches are results, not crashes -------------------------------


def test_scan_records_patches_that_cannot_build_or_give_nan(tmp_path):
    """The real CLI and engine on RegionB: sig_500_100 builds no model, sig_600_100's CLs is NaN (no sensitivity)."""
    out = tmp_path / "out"
    result = runner.invoke(app, ["fit", str(TINY), "--region", "RegionB", "--workers", "1", "--out", str(out), "--no-plot"])
    assert result.exit_code == 1, result.output
    assert "3 fitted (1 without sensitivity), 1 failed" in result.output
    records = {r["patch"]: r for r in json.loads((out / "results.json").read_text())["results"]}
    assert {n for n, r in records.items() if r["status"] == "ok"} == {"sig_300_100", "sig_400_100"}
    assert "InvalidModel" in records["sig_500_100"]["error"] and "mu_SIG" in records["sig_500_100"]["error"]
    assert records["sig_600_100"]["status"] == "no_sensitivity" and records["sig_600_100"]["cls_obs"] is None
    assert "not finite" in records["sig_600_100"]["error"]
    pallet = load_pallet(TINY, region="RegionB")
    assert_agrees(records["sig_300_100"], pyhf_reference(pallet, "sig_300_100"), "sig_300_100")


def test_fit_help_documents_the_exit_status():
    result = runner.invoke(app, ["fit", "--help"])
    assert result.exit_code == 0
    assert "1 some patches failed" in " ".join(result.output.split())


# --- the staus record as HEPData publishes it ------------------------------------------------


@pytest.mark.pallets
def test_staus_record_regions(staus_record):
    with pytest.raises(PalletError) as excinfo:
        load_pallet(staus_record)
    one_line_error(excinfo, "Region-combined, Region-highMass, Region-lowMass")
    pallet = load_pallet(staus_record, region="Region-combined", labels="mstau,mlsp")
    assert pallet.layout == LAYOUT_PATCH_FILES and len(pallet) == 57
    assert pallet.patches["DS_400_40_Staus"].values == (400.0, 40.0)
    assert pallet.labels == ["mstau", "mlsp"]


@pytest.mark.pallets
@pytest.mark.slow  # two fits of a 120-parameter model: 15-40 s on two busy cores
def test_staus_cls_equal_pyhf(staus_record):
    """DS_400_40_Staus in Region-combined: faasctl's fit equals pyhf on the files read independently."""
    with tarfile.open(staus_record) as tar:
        background = json.load(tar.extractfile("Region-combined/BkgOnly.json"))  # type: ignore[arg-type]
        operations = json.load(tar.extractfile("Region-combined/patch.DS_400_40_Staus.json"))  # type: ignore[arg-type]
    want_obs, want_exp = pyhf_hypotest(jsonpatch.apply_patch(background, operations))

    pallet = load_pallet(staus_record, region="Region-combined")
    with cf.ThreadPoolExecutor(1) as executor:
        (result,) = FitClient(executor).scan(pallet, ["DS_400_40_Staus"])
    assert result.ok, result.error
    assert_agrees(result, (want_obs, want_exp), "DS_400_40_Staus")
