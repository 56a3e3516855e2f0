"""Zero-cost proxies (#28): each pinned against an independent float64 numpy model of the cell (written out from
the equations of builder/cell.py's docstring) and central finite differences, never against torch autograd; the
correlation score by hand; storage, the CLI and a build's reassembly."""
import numpy as np
import pytest
import torch

from nasbench_ptb import schema
from nasbench_ptb.builder import proxies
from nasbench_ptb.space import space

from helpers import synthetic_table, tiny_corpus, tiny_preset, with_proxies

V, H, T, B = 5, 2, 3, 4
GENOTYPES = ["relu:0|sigmoid:1", "identity:0|tanh:0"]  # 2node cells: node 2 reads node 1, or the input state
ACT = {"tanh": np.tanh, "relu": lambda v: np.maximum(v, 0.0), "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
       "identity": lambda v: v}


def sig(v):
    return 1 / (1 + np.exp(-v))


def _cell(geno: str):
    nodes = [(op, int(pred)) for op, pred in (part.split(":") for part in geno.split("|"))]
    return nodes


def forward(theta: dict, geno: str, x: np.ndarray, delta: dict | None = None):
    """The cell over inputs ``x [T, B, E]`` from h = 0; returns outputs [T, B, H] and node states
    [T][k] ([B, H]); ``delta[(t, k)]`` is added to node state k at step t (a tap for dL/ds)."""
    nodes = _cell(geno)
    h = np.zeros((x.shape[1], H))
    outs, states_all = [], []
    for t in range(x.shape[0]):
        ch = np.concatenate([x[t], h], axis=1) @ theta["W0"]
        s0 = h + sig(ch[:, :H]) * (np.tanh(ch[:, H:]) - h)
        if delta and (t, 0) in delta:
            s0 = s0 + delta[(t, 0)]
        states = [s0]
        for k, (op, pred) in enumerate(nodes):
            sp = states[pred]
            ch = sp @ theta["Ws"][k]
            s = sp + sig(ch[:, :H]) * (ACT[op](ch[:, H:]) - sp)
            if delta and (t, k + 1) in delta:
                s = s + delta[(t, k + 1)]
            states.append(s)
        h = np.mean(states[1:], axis=0)
        outs.append(h)
        states_all.append(states)
    return np.stack(outs), states_all


def loss(theta, geno, tokens, targets, delta=None):
    out, _ = forward(theta, geno, theta["encoder"][tokens], delta)
    logits = out @ theta["encoder"].T + theta["bias"]
    logits = logits - logits.max(axis=-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    return -np.take_along_axis(logp, targets[..., None], axis=-1).mean()


def fd_grad(f, theta, keys=("encoder", "W0", "Ws"), h=1e-6):
    """Central differences of f over every entry of the weight matrices."""
    grads = {}
    for k in keys:
        g = np.zeros_like(theta[k])
        for idx in np.ndindex(theta[k].shape):
            plus, minus = {**theta, k: theta[k].copy()}, {**theta, k: theta[k].copy()}
            plus[k][idx] += h
            minus[k][idx] -= h
            g[idx] = (f(plus) - f(minus)) / (2 * h)
        grads[k] = g
    return grads


@pytest.fixture(scope="module")
def case():
    rng = np.random.RandomState(7)
    theta = {"encoder": rng.uniform(-1, 1, (V, H)), "W0": rng.uniform(-1, 1, (2 * H, 2 * H)),
             "Ws": rng.uniform(-1, 1, (2, H, 2 * H)), "bias": rng.uniform(-0.5, 0.5, V)}
    tokens, targets = rng.randint(0, V, (T, B)), rng.randint(0, V, (T, B))
    return theta, tokens, targets


def torch_proxy(name, theta, tokens, targets, genos=GENOTYPES):
    """The builder's proxy on slots holding this one set of weights under each genotype."""
    params = {k: torch.tensor(np.stack([v] * len(genos)), dtype=torch.float64, requires_grad=True)
              for k, v in theta.items()}
    geno = proxies.SlotGenotypes.of([space(2).parse(g) for g in genos])
    return proxies.FUNCTIONS[name](params, geno, torch.as_tensor(tokens), torch.as_tensor(targets)).detach().numpy()


@pytest.mark.parametrize("g", range(len(GENOTYPES)))
def test_gradient_proxies_match_finite_differences(case, g):
    theta, tokens, targets = case
    geno = GENOTYPES[g]
    grad = fd_grad(lambda th: loss(th, geno, tokens, targets), theta)
    layers = [grad["encoder"], grad["W0"], grad["Ws"][0], grad["Ws"][1]]
    assert torch_proxy("grad_norm", theta, tokens, targets)[g] == pytest.approx(
        sum(np.linalg.norm(x) for x in layers), rel=1e-6)
    assert torch_proxy("snip", theta, tokens, targets)[g] == pytest.approx(
        sum(np.abs(theta[k] * grad[k]).sum() for k in grad), rel=1e-6)
    # GraSP: Hg as the directional derivative of the gradient along g
    eps = 1e-4
    step = lambda sign: {**theta, **{k: theta[k] + sign * eps * grad[k] for k in grad}}  # noqa: E731
    g_plus = fd_grad(lambda th: loss(th, geno, tokens, targets), step(+1), h=1e-5)
    g_minus = fd_grad(lambda th: loss(th, geno, tokens, targets), step(-1), h=1e-5)
    hg = {k: (g_plus[k] - g_minus[k]) / (2 * eps) for k in grad}
    assert torch_proxy("grasp", theta, tokens, targets)[g] == pytest.approx(
        -sum((theta[k] * hg[k]).sum() for k in grad), rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("g", range(len(GENOTYPES)))
def test_fisher_is_the_channel_saliency_of_the_node_states(case, g):
    theta, tokens, targets = case
    geno = GENOTYPES[g]
    _, states = forward(theta, geno, theta["encoder"][tokens])
    total, h = 0.0, 1e-6
    for k in range(3):  # s_0, s_1, s_2
        act_grad = np.zeros((B, H))
        for t in range(T):
            for b in range(B):
                for j in range(H):
                    d = np.zeros((B, H))
                    d[b, j] = h
                    dl = (loss(theta, geno, tokens, targets, {(t, k): d})
                          - loss(theta, geno, tokens, targets, {(t, k): -d})) / (2 * h)
                    act_grad[b, j] += states[t][k][b, j] * dl
        total += 0.5 * (act_grad ** 2).mean(axis=0).sum()
    assert torch_proxy("fisher", theta, tokens, targets)[g] == pytest.approx(total, rel=1e-5)


@pytest.mark.parametrize("g", range(len(GENOTYPES)))
def test_synflow_is_the_flow_of_absolute_weights_on_ones(case, g):
    theta, tokens, targets = case
    geno = GENOTYPES[g]
    pos = {k: np.abs(v) for k, v in theta.items()}

    def r(th):
        out, _ = forward(th, geno, np.ones((T, 1, H)))
        return (out @ th["encoder"].T + th["bias"]).sum()

    grad = fd_grad(r, pos)
    assert torch_proxy("synflow", theta, tokens, targets)[g] == pytest.approx(
        sum((pos[k] * grad[k]).sum() for k in grad), rel=1e-6)


def test_correlation_score_by_hand():
    k = proxies.EPS
    # uncorrelated rows: the identity, eigenvalues 1, 1
    assert proxies.correlation_score(np.array([[1.0, -1, 0, 0], [0, 0, 1, -1]])) == pytest.approx(
        -2 * (np.log(1 + k) + 1 / (1 + k)))
    # identical rows: eigenvalues 2 and 0, the 0 dominating through 1/k
    assert proxies.correlation_score(np.array([[1.0, 0, -1], [2.0, 0, -2]])) == pytest.approx(
        -(np.log(2 + k) + 1 / (2 + k) + np.log(k) + 1 / k))
    # a constant row has no correlation: NaN, not a number that ranks
    assert np.isnan(proxies.correlation_score(np.array([[1.0, 1, 1], [1.0, 2, 3]])))


@pytest.mark.parametrize("g", range(len(GENOTYPES)))
def test_jacobian_and_hidden_covariance(case, g):
    theta, tokens, targets = case
    geno = GENOTYPES[g]
    x = theta["encoder"][tokens]
    jac, h = np.zeros_like(x), 1e-6
    for idx in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[idx] += h
        minus[idx] -= h
        jac[idx] = (forward(theta, geno, plus)[0].sum() - forward(theta, geno, minus)[0].sum()) / (2 * h)
    rows = jac.transpose(1, 0, 2).reshape(B, T * H)  # one row per sequence of the batch
    assert torch_proxy("jacob_cov", theta, tokens, targets)[g] == pytest.approx(proxies.correlation_score(rows),
                                                                               rel=1e-5)
    out, _ = forward(theta, geno, x)
    assert torch_proxy("hidden_cov", theta, tokens, targets)[g] == pytest.approx(
        proxies.correlation_score(out.reshape(T * B, H).T), rel=1e-9)


def test_slots_never_mix_and_seeds_are_the_runs_initial_weights():
    """A chunk's values equal each slot scored alone, and seed s is init_params(s): the weights standalone seed s
    starts from (the same for every cell)."""
    corpus, p = tiny_corpus(), tiny_preset(hidden=4)
    sp = space(2)
    tokens, targets = proxies.first_batch(corpus, p, torch.device("cpu"))
    assert tokens.shape == (p.bptt, p.batch_size) and torch.equal(tokens[1:], targets[:-1])
    genos, seeds = [sp.from_id(5), sp.from_id(20), sp.from_id(5)], [0, 1, 1]
    together = proxies.score_slots(genos, seeds, p, corpus.ntokens, tokens, targets, torch.device("cpu"))
    for a in range(3):
        alone = proxies.score_slots([genos[a]], [seeds[a]], p, corpus.ntokens, tokens, targets, torch.device("cpu"))
        for name in proxies.names():
            assert together[name][a] == pytest.approx(alone[name][0], rel=1e-4, abs=1e-9), name
    assert together["snip"][0] != pytest.approx(together["snip"][2])  # the seed changes the weights


def test_compute_fills_every_cell_and_seed():
    corpus, p = tiny_corpus(), tiny_preset(hidden=4)
    group, seconds = proxies.compute(space(2), p, corpus, [0, 1], chunk=7)
    assert list(group.seeds) == [0, 1] and set(seconds) == set(proxies.names())
    for name in proxies.names():
        values = getattr(group, name)
        assert values.shape == (32, 2) and np.isfinite(values).all(), name
    assert (group.params == group.params[0]).all() and group.params[0] > 0  # constant in the DARTS space
    with pytest.raises(ValueError, match="at least one seed"):
        proxies.compute(space(2), p, corpus, [])


def test_stored_proxies_round_trip_and_are_covered_by_the_digest(tmp_path):
    table = synthetic_table(tmp_path / "t.h5")
    group = schema.Proxies.empty(32, [0, 1, 2], params=np.full(32, 99))
    for i, name in enumerate(proxies.names()):
        getattr(group, name)[:] = np.arange(96).reshape(32, 3) * (i + 1)
    import dataclasses

    schema.write(dataclasses.replace(table, proxies=group), tmp_path / "z.h5")
    back = schema.read(tmp_path / "z.h5").proxies
    assert list(back.seeds) == [0, 1, 2] and back.params.tolist() == [99] * 32
    for name in proxies.names():
        np.testing.assert_array_equal(getattr(back, name), getattr(group, name))
    assert schema.read(tmp_path / "t.h5").proxies is None  # a table without them
    import h5py

    with h5py.File(tmp_path / "z.h5", "r+") as f:
        f["proxies/snip"][0, 0] = -1.0
    with pytest.raises(schema.TableError, match="digest"):
        schema.read(tmp_path / "z.h5")


def test_the_fused_float32_decoder_gives_the_float64_values(case):
    """The float32 path (the training decoder, fused on CPU) agrees with the float64 plain logits tested above."""
    theta, tokens, targets = case
    genos = [space(2).parse(g) for g in GENOTYPES]
    geno = proxies.SlotGenotypes.of(genos)
    for name in ("grad_norm", "snip", "fisher"):
        values = {}
        for dtype in (torch.float32, torch.float64):
            params = {k: torch.tensor(np.stack([v] * 2), dtype=dtype, requires_grad=True) for k, v in theta.items()}
            values[dtype] = proxies.FUNCTIONS[name](params, geno, torch.as_tensor(tokens),
                                                    torch.as_tensor(targets)).detach().double().numpy()
        np.testing.assert_allclose(values[torch.float32], values[torch.float64], rtol=1e-4, err_msg=name)


def test_agreement_on_a_constructed_table(tmp_path):
    """grad_norm = -ppl ranks as training does (tau +1), snip = +ppl the reverse (-1); the seeds of jacob_cov
    disagree exactly (seed tau -1); params is constant: NaN, never a number."""
    from nasbench_ptb.proxy_analyses import proxy_agreement
    from nasbench_ptb.stats import attempted, standalone_final

    table = synthetic_table(tmp_path / "t.h5")
    ppl = standalone_final(table)
    fill = np.where(np.isnan(ppl), 1e9, ppl)  # the diverged cell: worst under training, so worst here too
    base = np.arange(32.0)
    rows = {r.proxy: r for r in proxy_agreement(with_proxies(table, [0, 1], {
        "grad_norm": np.stack([-fill, -fill], 1), "snip": np.stack([fill, fill], 1),
        "jacob_cov": np.stack([base, -base], 1), "grasp": np.nan, "fisher": 1.0, "synflow": np.stack([-fill] * 2, 1),
        "hidden_cov": np.stack([-fill] * 2, 1)}))}
    n = int(attempted(table).sum())
    assert rows["grad_norm"].tau_b == pytest.approx(1.0) and rows["grad_norm"].spearman == pytest.approx(1.0)
    assert rows["grad_norm"].top_overlap == 1.0 and rows["grad_norm"].n == n == 31  # arch 1 never trained
    assert rows["snip"].tau_b == pytest.approx(-1.0) and rows["snip"].top_overlap == 0.0
    assert rows["jacob_cov"].seed_tau == pytest.approx(-1.0) and rows["grad_norm"].seed_tau == pytest.approx(1.0)
    for name in ("params", "fisher", "grasp"):  # constant or never finite: undefined
        assert np.isnan(rows[name].tau_b) and np.isnan(rows[name].spearman), name
        assert np.isnan(rows[name].top_overlap), name  # a constant ranks no top 10 %, not the first ids
    assert list(rows)[-1] == "params"


FAST = ["--preset", "smoke", "--set", "train_tokens=600", "--set", "valid_tokens=200", "--set", "test_tokens=200",
        "--set", "checkpoints=2", "--epochs", "1", "--quiet", "--mode", "standalone"]


def test_cli_adds_proxies_refreshes_the_manifest_and_a_rebuild_keeps_them(tmp_path, ptb_path, capsys):
    from nasbench_ptb import api
    from nasbench_ptb.cli import main
    from nasbench_ptb.files import read_manifest, sha256_file, write_manifest

    out = tmp_path / "2node-smoke.h5"
    build = ["build", "--space", "2node", "--data", str(ptb_path), "--out", str(out), *FAST, "--archs", "0-3"]
    assert main(build) == 0
    write_manifest(tmp_path, [out.name])
    capsys.readouterr()
    assert main(["proxies", str(out), "--seeds", "2", "--data", str(ptb_path), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "32 architectures × 2 seeds" in printed and "hidden_cov" in printed and "params" in printed
    table = schema.read(out)
    assert table.proxies.grad_norm.shape == (32, 2) and np.isfinite(table.proxies.grad_norm).all()
    how = table.attrs["proxies"]
    assert how["hidden"] == 8 and set(how["seconds"]) == set(proxies.names())
    assert read_manifest(tmp_path)[out.name] == sha256_file(out)  # so the HTTP/query side still opens it
    assert api.load(out).table.proxies is not None
    assert main(["proxies", str(out), "--seeds", "2", "--data", str(ptb_path), "--quiet"]) == 0
    assert "already holds" in capsys.readouterr().out
    # a later build of the same table (more cells) reassembles it from its parts: the proxies stay
    assert main([*build[:-1], "0-5"]) == 0
    again = schema.read(out)
    np.testing.assert_array_equal(again.proxies.snip, table.proxies.snip)
    assert (again.standalone.status[:6] == schema.Status.OK).all()


def test_cli_refuses_bad_input_in_one_line(tmp_path, capsys):
    from nasbench_ptb.cli import main

    assert main(["proxies", str(tmp_path / "none.h5")]) == 1
    assert "no such table" in capsys.readouterr().err
    assert main(["proxies", str(tmp_path / "none.h5"), "--seeds", "0"]) == 1
    assert "--seeds must be at least 1" in capsys.readouterr().err
