"""Tiny synthetic corpora and presets built by the tests themselves."""
import dataclasses
from pathlib import Path

import numpy as np

from nasbench_ptb.builder import presets
from nasbench_ptb.builder.data import Corpus


def tiny_corpus(vocab: int = 40, n: int = 3000, seed: int = 0) -> Corpus:
    rng = np.random.RandomState(seed)
    # a little structure (a noisy cycle) so that training lowers the loss
    stream = (np.arange(n) * 7 + rng.randint(0, 3, n)) % vocab
    return Corpus(tuple(f"w{i}" for i in range(vocab)), stream[:2000].astype(np.int64),
                  stream[2000:2500].astype(np.int64), stream[2500:].astype(np.int64), {})


def tiny_preset(**changes) -> presets.Preset:
    base = dataclasses.replace(
        presets.get("smoke"), hidden=6, batch_size=4, bptt=8, epochs=1.0, checkpoints=3, train_tokens=None,
        valid_tokens=None, test_tokens=None, eval_batch_size=4, nonmono=1, lr=2.0,
    )
    return dataclasses.replace(base, **changes)


def search_preset() -> presets.Preset:
    """The tiny preset the search-phase tests train their super-nets at (one epoch, three checkpoints, whole splits)."""
    return tiny_preset(ws_epochs=1.0, ws_checkpoints=3, ws_valid_tokens=None, ws_final_valid_tokens=None)


# per algorithm, options that keep a tiny end-to-end search fast (fewer controller steps, EPD epochs, derivations)
FAST_SEARCH = {"enas": {"controller_steps": 3, "controller_aggregate": 4, "derive": 20},
               "nao": {"epd_epochs": 5, "max_step": 3}, "darts": {}, "random_ws": {}}


def key_valid(a, n: int = 32):
    """Synthetic tables: the final standalone validation order, a permutation of the ids (best: 27 in 2node)."""
    return (7 * np.asarray(a) + 3) % n


def key_test(a, n: int = 32):
    """Synthetic tables: the test order, another permutation (best: 17 in 2node)."""
    return (11 * np.asarray(a) + 5) % n


def key_early(a, n: int = 32):
    """Synthetic tables: what reorders the earlier checkpoints."""
    return (5 * np.asarray(a) + 1) % n


def synthetic_table(path, space_name: str = "2node", seeds: int = 2, ws_seeds: int = 3, C: int = 5, seed: int = 0):
    """A table with known values whose id, validation, test and early-checkpoint orders all differ:
    final valid ppl = 100 + key_valid(id) + seed, checkpoint c adds (C-1-c)·(20 + key_early(id)),
    test ppl = 90 + key_test(id) + seed; arch 1 missing, arch 2 diverged on seed 0 only, arch 3 diverged on all
    seeds; WS ppl at the final checkpoint 1000 − key_valid (tau = −1 on the ok architectures), earlier
    checkpoints reordered by key_early, WS test 900 − key_test; the last WS seed diverged."""
    from nasbench_ptb import schema
    from nasbench_ptb.space import space

    sp = space(space_name)
    N = sp.size
    ids = np.arange(N)
    rng = np.random.RandomState(seed)
    sa = schema.Standalone.empty(N, range(seeds), np.linspace(1.0 / C, 1.0, C))
    for a in range(N):
        for s in range(seeds):
            sa.valid_ppl[a, s] = 100 + key_valid(a, N) + s + (C - 1 - np.arange(C)) * (20 + key_early(a, N))
            sa.train_loss[a, s] = np.linspace(7, 5, C) + rng.rand(C) * 0.01
            sa.seconds[a, s] = np.arange(1, C + 1) * 2.0
            sa.test_ppl[a, s] = 90 + key_test(a, N) + s
            sa.best_epoch[a, s] = 1.0
            sa.status[a, s] = schema.Status.OK
    sa.status[1] = schema.Status.MISSING
    for arr in (sa.valid_ppl, sa.train_loss, sa.seconds, sa.test_ppl, sa.best_epoch):
        arr[1] = np.nan
    for a, cols in ((2, [0]), (3, list(range(seeds)))):
        for s in cols:
            sa.status[a, s] = schema.Status.DIVERGED
            sa.valid_ppl[a, s, 2:] = np.nan
            sa.train_loss[a, s, 2:] = np.nan
            sa.seconds[a, s, 2:] = np.nan
            sa.test_ppl[a, s] = sa.best_epoch[a, s] = np.nan
    ws = schema.WeightSharing.empty(N, range(ws_seeds), np.linspace(0.5, 1.0, 3), [100, 100, 1000])
    for k in range(ws_seeds):
        ws.valid_ppl[k] = 1000 - key_valid(ids, N)[None, :] + (2 - np.arange(3))[:, None] * 3 * key_early(ids, N)
        ws.test_ppl[k] = 900 - key_test(ids, N)
        ws.train_loss[k] = [6.0, 5.5, 5.2]
        ws.seconds[k] = [10.0, 20.0, 30.0]
        ws.samples[k] = 7
        ws.status[k] = schema.Status.OK
    ws.status[ws_seeds - 1] = schema.Status.DIVERGED
    ws.valid_ppl[ws_seeds - 1] = np.nan
    ws.test_ppl[ws_seeds - 1] = np.nan
    table = schema.Table(sp, "synthetic", {"hidden": 4, "params": 1234, "epochs": 1.0}, sa, ws,
                         {"device": ["test"], "software": {"numpy": np.__version__}})
    schema.write(table, path)
    return table


def with_proxies(table, seeds, values: dict, seconds: dict | None = None):
    """``table`` with a /proxies group: ``values`` per proxy (broadcast to [N, S]; the rest NaN), params 7, and the
    measured ``seconds`` per proxy (over all [N, S] slots) in its attributes."""
    from nasbench_ptb import schema

    N = table.space.size
    group = schema.Proxies.empty(N, list(seeds), params=np.full(N, 7))
    for name, v in values.items():
        getattr(group, name)[:] = v
    attrs = {**table.attrs, "proxies": {"seconds": dict(seconds or {}), "total_seconds": sum((seconds or {}).values()),
                                        "device": "test"}}
    return dataclasses.replace(table, proxies=group, attrs=attrs)


def kill_after_parts(cmd, parts, n: int, env: dict, timeout: float = 120.0, pattern: str = "unit-*.h5",
                     group: list | None = None) -> dict:
    """Start a build command, SIGKILL it once ``parts`` (its ``<out>.parts`` folder) holds ``n`` files matching
    ``pattern`` (default: finished standalone units; ``state-*.h5``: saved states of running units), and return
    those files' modification times by name (a resume must leave finished units untouched). ``group``: the build
    runs in a new session and its process group id is appended there (to look for processes that outlive it)."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=group is not None)
    if group is not None:
        group.append(proc.pid)
    deadline = time.time() + timeout
    while time.time() < deadline and len(list(parts.glob(pattern))) < n:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return {p.name: p.stat().st_mtime_ns for p in parts.glob(pattern)}


def same_table(a_path, b_path) -> None:
    """Every dataset equal bit for bit, the timings aside."""
    import h5py

    with h5py.File(a_path) as a, h5py.File(b_path) as b:
        names = []
        a.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        assert names == [n for n in names if n in b] and len(names) > 5
        for name in names:
            if name.endswith("seconds"):
                continue
            x, y = a[name][()], b[name][()]
            assert x.dtype == y.dtype and x.shape == y.shape, name
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name


def http_tables(d: Path) -> list[Path]:
    """The two tables the HTTP tests serve from folder ``d``: a 2-node one with proxies, a 3-node one without."""
    from nasbench_ptb import schema

    base = synthetic_table(d / "2node-x.h5")
    ids = np.arange(32)
    synflow = -key_valid(ids).astype(float)
    synflow[3] = -1000.0  # 3 diverged: last under training, last under synflow
    # the 2-node table has proxies: synflow agrees with training, hidden_cov is the reverse of it, grasp undefined
    schema.write(with_proxies(base, [0, 1], {"synflow": synflow[:, None], "hidden_cov": key_valid(ids)[:, None]},
                              {"synflow": 6.4, "hidden_cov": 3.2}), d / "2node-x.h5")
    synthetic_table(d / "3node-x.h5", "3node")  # and the 3-node one none
    return [d / "2node-x.h5", d / "3node-x.h5"]
