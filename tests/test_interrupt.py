"""Interrupting ``faasctl fit``: a clean exit 130 that keeps every result and leaves no process or temp folder behind.

Real processes throughout: the CLI in a subprocess (its own session, as a terminal's foreground job),
parsl's interchange and a local worker pool, signalled as a terminal or a batch system would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from faasctl.scan.results import load_results


def _marked(mark: str) -> set[int]:
    """Processes whose environment holds ``mark``: the CLI and everything it started, even re-parented ones."""
    needle = f"FAASCTL_TEST_MARK={mark}".encode()
    found = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if needle in (proc / "environ").read_bytes().split(b"\0"):
                    found.add(int(proc.name))
            except OSError:  # gone, or not ours to read
                pass
    return found


def _wait_until(condition, what: str, limit: float = 300) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {limit:g} s")
        time.sleep(0.1)


@pytest.mark.parametrize(("signum", "group"), [(signal.SIGINT, True), (signal.SIGTERM, False), (signal.SIGHUP, False)],
                         ids=["ctrl-c-to-group", "sigterm", "sighup"])
def test_interrupted_scan_exits_130_keeps_results_and_leaves_no_process(example_pallet, tmp_path, signum, group):
    out = tmp_path / "out"
    tmp = tmp_path / "tmp"  # the CLI's temporary folders (parsl's run folder) go here, to be checked
    tmp.mkdir()
    mark = uuid.uuid4().hex
    cmd = [sys.executable, "-m", "faasctl.cli", "fit", str(example_pallet), "--backend", "numpy", "-w", "1",
           "--out", str(out), "--no-plot"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "FAASCTL_TEST_MARK": mark, "TMPDIR": str(tmp)})
    try:
        _wait_until(lambda: proc.poll() is not None or (out / "results.sqlite").exists() and len(load_results(out)) >= 1,
                    "no result")
        assert proc.poll() is None, "the scan ended before it could be interrupted"
        if group:  # as a terminal sends Ctrl-C: to every process of the foreground group
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, (stdout, stderr)
    safe = len(load_results(out))
    assert f"Interrupted; {safe} results are safe in {out}" in " ".join(stdout.split()), stdout
    assert "Traceback" not in stderr, stderr
    # everything exported at exit: results.json holds what the database holds
    assert (out / "results.json").exists()
    _wait_until(lambda: not _marked(mark), f"processes {sorted(_marked(mark))} still running", limit=30)
    assert not list(tmp.iterdir()), "temporary folders left behind"
