"""``build --executor ray`` on a local Ray cluster: the same table as the local executor, retries after a worker
is killed, resume after the driver is killed, one-line errors. One cluster per module (``ray.init`` ≈ 5 s)."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from nasbench_ptb import schema
from nasbench_ptb.cli import main
from nasbench_ptb.schema import Status

ray = pytest.importorskip("ray")
torch = pytest.importorskip("torch")
from nasbench_ptb.builder import build as build_mod  # noqa: E402
from nasbench_ptb.builder import cluster, data, presets  # noqa: E402
from nasbench_ptb.builder.executors import Failed, Finished, LocalExecutor, Work  # noqa: E402
from nasbench_ptb.space import space  # noqa: E402

from helpers import kill_after_parts, same_table  # noqa: E402

FAST = ["--space", "2node", "--preset", "smoke", "--set", "train_tokens=600", "--set", "valid_tokens=200",
        "--set", "test_tokens=200", "--set", "checkpoints=3", "--epochs", "1", "--quiet", "--set", "slots_per_unit=2",
        "--set", "ws_epochs=1", "--set", "ws_checkpoints=2", "--set", "ws_valid_tokens=200",
        "--set", "ws_final_valid_tokens=400", "--set", "ws_slots_per_unit=1"]
TASK_TITLE = b"ray::_train_remote"  # Ray's process title of a worker while it runs a unit


@pytest.fixture(scope="module")
def cluster_address():
    ray.init(num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _build(tmp_path, ptb_path, out, *extra):
    return main(["build", "--data", str(ptb_path), "--out", str(tmp_path / out), *FAST, *extra])


def test_ray_table_equals_the_local_one(cluster_address, tmp_path, ptb_path):
    args = ("--archs", "0-5,20", "--mode", "both", "--ws-seeds", "2")
    assert _build(tmp_path, ptb_path, "local.h5", *args) == 0
    assert _build(tmp_path, ptb_path, "ray.h5", *args, "--executor", "ray") == 0
    same_table(tmp_path / "local.h5", tmp_path / "ray.h5")
    table = schema.read(tmp_path / "ray.h5")
    assert (table.standalone.status[[0, 1, 2, 3, 4, 5, 20]] == Status.OK).all()
    assert (table.ws.status == Status.OK).all() and table.attrs["timings"]["units"] == 4 + 2
    # a rerun trains nothing and writes the same table
    parts = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray.h5.parts").glob("*.h5")}
    assert _build(tmp_path, ptb_path, "ray.h5", *args, "--executor", "ray") == 0
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "ray.h5.parts").glob("*.h5")} == parts


def test_workers_load_ptb_once_per_process_and_failures_name_the_unit(cluster_address, ptb_path):
    sp, p = space("2node"), presets.override(presets.get("smoke"), {"train_tokens": 600, "valid_tokens": 200,
                                                                    "test_tokens": 200, "checkpoints": 2})
    ex = cluster.RayExecutor(retries=1)
    dev = ex.connect("auto")
    assert dev.type == "cpu" and ex.window == 4  # 2 CPUs, 1 per unit, one unit queued behind each
    work = Work(sp, p, data.load(ptb_path), dev, str(ptb_path))
    units = [build_mod.Unit("standalone", (a,), (0,)) for a in range(6)]
    bad = build_mod.Unit("standalone", (999,), (0,))  # no such architecture: raises in the worker, every time
    results = list(ex.run([*units[:3], bad, *units[3:]], work, lambda left: True, _Quiet()))
    done = [r for r in results if isinstance(r, Finished)]
    failed = [r for r in results if isinstance(r, Failed)]
    assert sorted(r.unit.arch_ids[0] for r in done) == list(range(6))
    assert len(failed) == 1 and failed[0].unit == bad and "999" in failed[0].error and "1 retries" in failed[0].error
    assert all(r.worker["corpus_loads"] == 1 for r in done)  # each worker process loaded PTB once
    assert len({r.worker["pid"] for r in done}) <= 2 < len(done)  # units shared long-lived workers
    # the unit's numbers are the local executor's
    local = list(LocalExecutor().run(units[:1], Work(sp, p, work.corpus, torch.device("cpu"), None),
                                     lambda left: True, _Quiet()))
    for key in ("valid_ppl", "train_loss", "test_ppl"):
        np.testing.assert_array_equal(local[0].arrays[key], next(r for r in done if r.unit == units[0]).arrays[key])


def test_a_worker_killed_mid_unit_is_retried_and_the_table_is_complete(cluster_address, tmp_path, ptb_path):
    killed = []

    def kill_first_task():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            for pid in _task_pids():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_first_task)
    killer.start()
    args = ("--archs", "0-7", "--mode", "standalone")
    try:
        assert _build(tmp_path, ptb_path, "ray.h5", *args, "--executor", "ray") == 0
    finally:
        killer.join()
    assert killed, "no worker was running a unit"
    assert _build(tmp_path, ptb_path, "local.h5", *args) == 0
    same_table(tmp_path / "local.h5", tmp_path / "ray.h5")
    assert len(list((tmp_path / "ray.h5.parts").glob("unit-*.h5"))) == 4  # each unit persisted once


def test_a_killed_driver_resumes_without_retraining(cluster_address, tmp_path, ptb_path):
    cmd = [sys.executable, "-m", "nasbench_ptb.cli", "build", "--data", str(ptb_path), *FAST, "--archs", "0-11",
           "--mode", "standalone", "--set", "slots_per_unit=1", "--executor", "ray", "--address", cluster_address,
           "--unit-cpus", "1", "--out", str(tmp_path / "t.h5")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    parts = tmp_path / "t.h5.parts"
    finished = kill_after_parts(cmd, parts, 2, env, timeout=180)
    assert 2 <= len(finished) < 12, "the kill should land mid-build"
    assert not (tmp_path / "t.h5").exists()
    resumed = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    for name, mtime in finished.items():  # finished units were neither retrained nor rewritten
        assert (parts / name).stat().st_mtime_ns == mtime
    assert len(list(parts.glob("unit-*.h5"))) == 12
    assert (schema.read(tmp_path / "t.h5").standalone.status[:12] == Status.OK).all()


def test_time_limit_zero_starts_nothing_on_ray(cluster_address, tmp_path, ptb_path, capsys):
    assert _build(tmp_path, ptb_path, "t.h5", "--archs", "0-3", "--mode", "standalone", "--executor", "ray",
                  "--time-limit", "0") == 0
    assert "2 of 2 units left" in capsys.readouterr().err
    assert (schema.read(tmp_path / "t.h5").standalone.status == Status.MISSING).all()


def test_failed_units_keep_the_finished_ones_and_name_themselves(tmp_path, ptb_path):
    """The driver's side, whatever the executor: a unit reported failed is named, the rest are in the table."""

    class OneFails(LocalExecutor):
        def run(self, todo, work, may_start, progress):
            todo = list(todo)
            yield Failed(todo[0], "worker lost")
            yield from super().run(todo[1:], work, may_start, progress)

    sp, p = space("2node"), presets.override(presets.get("smoke"), {"train_tokens": 600, "valid_tokens": 200,
                                                                    "test_tokens": 200, "slots_per_unit": 2})
    with pytest.raises(build_mod.BuildError, match=r"1 unit\(s\) failed \(standalone runs \(arch:seed\) 0:0,1:0\)"):
        build_mod.build(build_mod.BuildRequest(sp, p, tmp_path / "t.h5", [sp.from_id(i) for i in range(4)], 1, "cpu",
                                               str(ptb_path), quiet=True, mode="standalone", executor=OneFails()))
    status = schema.read(tmp_path / "t.h5").standalone.status[:, 0]
    assert list(status[:4]) == [Status.MISSING] * 2 + [Status.OK] * 2


@pytest.mark.parametrize("extra, message", [
    (["--executor", "ray", "--address", "127.0.0.1:1"], "cannot reach the Ray cluster at 127.0.0.1:1"),
    (["--executor", "ray", "--address", "nowhere"], "expected auto or HOST:PORT"),
    (["--executor", "ray", "--unit-cpus", "0"], "--unit-cpus must be at least 1"),
    (["--executor", "ray", "--device", "cuda"], "needs a GPU share per unit: give --unit-gpus"),
    (["--executor", "ray", "--unit-cpus", "64"], "a unit asks for 64 CPUs and 0 GPUs"),
    (["--address", "auto"], "--address applies to --executor ray"),
    (["--unit-gpus", "1"], "--unit-gpus applies to --executor ray"),
])
def test_bad_cluster_input_is_one_line_and_writes_nothing(tmp_path, ptb_path, extra, message):
    res = subprocess.run([sys.executable, "-m", "nasbench_ptb.cli", "build", "--data", str(ptb_path), *FAST,
                          "--out", str(tmp_path / "t.h5"), *extra], capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and message in res.stderr, res.stderr
    assert res.stderr.strip().count("\n") == 0 and "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_ray_missing_is_one_line(tmp_path, ptb_path):
    code = ("import sys; sys.modules['ray'] = None; from nasbench_ptb.cli import main; "
            f"sys.exit(main(['build', '--data', {str(ptb_path)!r}, '--out', {str(tmp_path / 't.h5')!r}, "
            "'--space', '2node', '--executor', 'ray']))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and "needs Ray: pip install 'nasbench-ptb[cluster]'" in res.stderr, res.stderr
    assert list(tmp_path.iterdir()) == []


class _Quiet:
    def tokens(self, n):
        pass

    def set_in_flight(self, n):
        pass


def _task_pids() -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "cmdline").read_bytes().startswith(TASK_TITLE):
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids
