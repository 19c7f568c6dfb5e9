"""The local engine (`faasctl.executors.local`): worker set-up, and no worker outliving its client."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from faasctl.cli.main import app
from faasctl.executors.capacity import executor_capacity
from faasctl.executors.local import local_executor
from faasctl.study import WORKER_ENV

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "simple"


def environment() -> dict[str, str]:
    return dict(os.environ)


def test_workers_get_the_worker_env_and_run_the_initializer():
    init = functools.partial(exec, "import os; os.environ['FAASCTL_TEST_INIT'] = str(os.getpid())", {})
    with local_executor(2, env={"FAASCTL_TEST_ENV": "yes"}, initializer=init, warm=None) as ex:
        assert executor_capacity(ex) == 2
        env = ex.submit(environment).result(timeout=120)
    assert {k: env[k] for k in WORKER_ENV} == WORKER_ENV
    assert env["FAASCTL_TEST_ENV"] == "yes"
    assert env["FAASCTL_TEST_INIT"] != str(os.getpid())  # set in the worker, not here


INIT = "import os, pathlib; pathlib.Path(os.environ['FAASCTL_TEST_DIR'], f'{os.getpid()}.init').touch()"


MAIN_AGAIN = """
import runpy, sys
runpy.run_path(sys.argv[1], run_name="__mp_main__")  # what a spawned worker does with its parent's __main__
print(sorted(m for m in ("typer", "rich", "faasctl.cli.main") if m in sys.modules))
"""


def test_workers_run_the_console_script_without_the_cli():
    """Spawned workers run their parent's ``__main__`` file again before anything else: for the
    ``faasctl`` console script that must not import the typer app and its commands."""
    script = Path(sys.executable).parent / "faasctl"
    assert script.is_file(), f"no console script beside {sys.executable}: install the project (make test does)"
    out = subprocess.run([sys.executable, "-c", MAIN_AGAIN, str(script)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]"]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: no worker waits")
def test_with_a_worker_per_core_the_last_starts_at_the_first_task(tmp_path):
    """The caller reads the pallet meanwhile: a worker per core less one get ready first."""
    cores = os.cpu_count()
    init = functools.partial(exec, INIT, {})
    with local_executor(cores, env={"FAASCTL_TEST_DIR": str(tmp_path)}, initializer=init, warm=None) as ex:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("*.init"))) < cores - 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # the last one would have got ready by now, had it not waited
        assert len(list(tmp_path.glob("*.init"))) == cores - 1
        ex.submit(os.getpid).result(timeout=120)
        while len(list(tmp_path.glob("*.init"))) < cores and time.monotonic() < deadline + 60:
            time.sleep(0.05)
        assert len(list(tmp_path.glob("*.init"))) == cores
    (tmp_path / "fewer").mkdir()
    with local_executor(cores - 1 or 1, env={"FAASCTL_TEST_DIR": str(tmp_path / "fewer")}, initializer=init,
                        warm=None):
        deadline = time.monotonic() + 60
        while len(list((tmp_path / "fewer").glob("*.init"))) < (cores - 1 or 1) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(list((tmp_path / "fewer").glob("*.init"))) == (cores - 1 or 1)  # a core to spare: none waits


def test_leaving_the_block_ends_the_workers():
    with local_executor(2, warm=None) as ex:
        pids = {ex.submit(os.getpid).result(timeout=120) for _ in range(4)}
    assert pids and not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
    with pytest.raises(RuntimeError, match="after shutdown"):
        ex.submit(os.getpid)


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.add(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


#: A long fit: a worker left alone would keep running it. It leaves ``<pid>.busy`` in the
#: current folder once it runs (exec: a builtin, so a spawned worker can unpickle the task).
TASK = "import os, pathlib, time; pathlib.Path(f'{os.getpid()}.busy').touch(); time.sleep(300)"

CLIENT = f"""
import time
from faasctl.executors.local import local_executor

if __name__ == "__main__":
    with local_executor(2, warm=None) as ex:
        for _ in range(2):
            ex.submit(exec, {TASK!r})
        print("submitted", flush=True)
        time.sleep(300)
"""


def _descendants_when_busy(process: subprocess.Popen, count: int, folder: Path) -> set[int]:
    """The client's descendants once ``count`` workers run a `TASK` (each leaves ``<pid>.busy`` in ``folder``)."""
    parent = psutil.Process(process.pid)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        busy = {int(f.stem) for f in folder.glob("*.busy")}
        if len(busy) >= count:
            descendants = {p.pid for p in parent.children(recursive=True)}
            assert busy <= descendants, (busy, descendants)
            return descendants
        time.sleep(0.05)
    raise AssertionError("the workers did not start their tasks")


def _assert_gone_soon(pids: set[int], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pids), [psutil.Process(p).cmdline() for p in _alive(pids)]


def test_workers_busy_in_a_task_end_with_their_client(tmp_path):
    client = subprocess.Popen([sys.executable, "-c", CLIENT], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert client.stdout.readline().strip() == "submitted"
        workers = _descendants_when_busy(client, 2, tmp_path)  # both in their 300 s task
        os.kill(client.pid, signal.SIGKILL)
        client.wait(timeout=30)
        _assert_gone_soon(workers)
    finally:
        if client.poll() is None:
            client.kill()


def test_kill_9_of_the_cli_leaves_no_worker_and_no_temp_folder(tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp)}
    cli = subprocess.Popen(
        [sys.executable, "-m", "faasctl.cli", "fit", str(EXAMPLE), "--workers", "2", "--out", str(tmp_path / "out"),
         "--no-plot"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
    )
    try:
        parent = psutil.Process(cli.pid)
        deadline = time.monotonic() + 120
        children: list[psutil.Process] = []
        while time.monotonic() < deadline and cli.poll() is None:
            children = parent.children(recursive=True)
            if len(children) >= 2:  # the workers (and multiprocessing's resource tracker)
                break
            time.sleep(0.05)
        assert len(children) >= 2, "the workers did not start"
        time.sleep(1.0)  # the workers are importing, compiling or fitting
        descendants = {p.pid for p in parent.children(recursive=True)}
        os.kill(cli.pid, signal.SIGKILL)
        cli.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _alive(descendants) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(descendants), [psutil.Process(p).cmdline() for p in _alive(descendants)]
        assert list(temp.iterdir()) == []
    finally:
        if cli.poll() is None:
            cli.kill()


def test_fit_timeline_on_the_local_engine(tmp_path):
    out = tmp_path / "out"
    names = ["grid_300_0", "grid_400_100", "grid_500_200", "grid_600_200"]
    args = ["fit", str(EXAMPLE), "--workers", "2", "--out", str(out), "--no-plot", "--timeline"]
    result = CliRunner().invoke(app, args + [a for n in names for a in ("--patch", n)])
    assert result.exit_code == 0, result.output
    assert (out / "timeline.png").stat().st_size > 0
    doc = json.loads((out / "timeline.json").read_text())
    assert set(doc["phases"]) >= {"imports", "engine start", "read pallet", "scan"}
    summary = doc["breakdown"]
    assert summary["patches"] == len(names) and 1 <= summary["workers"] <= 2
    assert 0 < summary["first_result"] <= summary["wall"]
    assert summary["worker_import"] > 0 and summary["fit"] > 0
    stored = json.loads((out / "results.json").read_text())["results"]
    assert all(r["timing"]["started"] and r["timing"]["received"] for r in stored)
