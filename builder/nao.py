"""NAO (Luo et al., 2018) with weight sharing on the reduced spaces: encoder, performance predictor, decoder.

A cell is the token sequence ``pred_1, op_1, …, pred_n, op_n`` (predecessor tokens 0..n−1, op tokens n..n+3).
The encoder (LSTM) maps it to per-position outputs whose mean is the cell's embedding ``e``; the predictor (MLP,
sigmoid) maps ``e`` to a score in [0, 1] (1 = the pool's best validation ppl under the shared weights, 0 = its
worst); the decoder (LSTM started from ``e``, greedy, invalid tokens masked) rebuilds the sequence. Loss =
0.8 · prediction MSE + 0.2 · reconstruction cross-entropy, Adam 1e-3.

Search (NAO-WS, the Sciuto et al. setting): a random pool of ``pool_fraction`` of the space; the shared weights
train on cells drawn uniformly from the pool; at each search epoch the pool is scored under the shared weights,
the EPD trains ``epd_epochs`` on it, and new cells are decoded from the embeddings of the ``top`` pool cells moved
along the predictor's gradient (``e + λ∇e``, λ growing until new cells appear); at most ``max_new`` (3) new cells
join the pool (random ones fill up when decoding finds fewer). The choice: the pool's best under the shared
weights.
"""
from __future__ import annotations

import numpy as np
import torch

from nasbench_ptb.analyses import tau_b
from nasbench_ptb.space import id_of_choices

from .engine import SlotGenotypes
from .enas import OPS
from .search import Context, Method


def tokens_of(sp, ids) -> np.ndarray:
    """``[len(ids), 2n]`` token sequences."""
    out = []
    for i in ids:
        g = sp.from_id(int(i))
        out.append([t for p, o in zip(g.preds, g.ops) for t in (p, sp.n + o)])
    return np.array(out, dtype=np.int64)


def ids_of_tokens(tokens: np.ndarray, n: int) -> np.ndarray:
    return id_of_choices((OPS * tokens[:, 0::2] + (tokens[:, 1::2] - n)).T)


class EPD(torch.nn.Module):
    def __init__(self, nodes: int, hidden: int = 64, seed: int = 0):
        super().__init__()
        self.n, V = nodes, nodes + OPS
        self.embed = torch.nn.Embedding(V + 1, hidden)  # + start token
        self.encoder = torch.nn.LSTM(hidden, hidden, batch_first=True)
        self.predictor = torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                                             torch.nn.Linear(hidden, 1))
        self.decoder = torch.nn.LSTMCell(hidden, hidden)
        self.out = torch.nn.Linear(hidden, V)
        mask = torch.full((2 * nodes, V), float("-inf"))
        for k in range(1, nodes + 1):
            mask[2 * (k - 1), :k] = 0.0  # a predecessor of node k: 0..k-1
            mask[2 * (k - 1) + 1, nodes:] = 0.0  # an op
        self.register_buffer("valid", mask)
        g = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.empty(p.shape).uniform_(-0.1, 0.1, generator=g))

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.encoder(self.embed(tokens))
        return torch.nn.functional.normalize(out, dim=-1).mean(dim=1)

    def predict(self, e: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.predictor(e)).view(-1)

    def decode_logits(self, e: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Logits per position ``[B, 2n, V]``; teacher-forced on ``tokens`` when given, else greedy."""
        B = e.shape[0]
        state = (e, torch.zeros_like(e))
        inp = self.embed(torch.full((B,), self.n + OPS, dtype=torch.long, device=e.device))
        logits = []
        for t in range(2 * self.n):
            state = self.decoder(inp, state)
            lg = self.out(state[0]) + self.valid[t]
            logits.append(lg)
            nxt = tokens[:, t] if tokens is not None else lg.argmax(dim=-1)
            inp = self.embed(nxt)
        return torch.stack(logits, dim=1)

    def loss(self, tokens: torch.Tensor, score: torch.Tensor, trade_off: float = 0.8) -> torch.Tensor:
        e = self.encode(tokens)
        mse = (self.predict(e) - score).pow(2).mean()
        logits = self.decode_logits(e, tokens)
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1))
        return trade_off * mse + (1 - trade_off) * ce


def normalised_score(ppl: np.ndarray) -> np.ndarray:
    """1 for the lowest ppl of the pool, 0 for the highest (inf: 0); all equal: 0.5."""
    finite = np.isfinite(ppl)
    if not finite.any():
        return np.zeros(len(ppl))
    lo, hi = ppl[finite].min(), ppl[finite].max()
    if hi == lo:
        return np.where(finite, 0.5, 0.0)
    return np.where(finite, (hi - np.where(finite, ppl, hi)) / (hi - lo), 0.0)


class Nao(Method):
    name = "nao"

    def __init__(self, ctx: Context, pool_fraction: float = 0.2, max_new: int = 3, top: int = 100,
                 epd_epochs: int = 100, epd_hidden: int = 64):
        if not 0 < pool_fraction <= 1 or min(max_new, top, epd_epochs, epd_hidden) < 1:
            raise ValueError("NAO pool_fraction must be in (0, 1]; max_new, top, epd_epochs, epd_hidden ≥ 1")
        self.ctx, self.max_new, self.top, self.epochs = ctx, max_new, top, epd_epochs
        N = ctx.sp.size
        size = max(2, int(round(pool_fraction * N)))
        self.pools = [list(rng.choice(N, min(size, N), replace=False)) for rng in ctx.rngs]
        self.draws = [np.random.RandomState(int(s) + 15_485_863) for s in ctx.seeds]  # the training cells
        self.epds = [EPD(ctx.sp.n, epd_hidden, s).to(ctx.device) for s in ctx.seeds]
        self.opts = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in self.epds]
        self.genos = SlotGenotypes.of(list(ctx.sp), ctx.device)
        self.options = {"pool_fraction": pool_fraction, "max_new": max_new, "top": top, "epd_epochs": epd_epochs,
                        "epd_hidden": epd_hidden}

    def genotypes(self) -> SlotGenotypes:
        ids = torch.as_tensor([pool[d.randint(len(pool))] for pool, d in zip(self.pools, self.draws)],
                              device=self.ctx.device)
        return SlotGenotypes(self.genos.preds[ids], self.genos.ops[ids], uniform=None)

    def fit(self, s: int, ids: np.ndarray, score: np.ndarray) -> float:
        """Train slot ``s``'s EPD on (cells, scores); returns the predictor's tau-b on them after training."""
        m, opt = self.epds[s], self.opts[s]
        tokens = torch.as_tensor(tokens_of(self.ctx.sp, ids), device=self.ctx.device)
        y = torch.as_tensor(score, dtype=torch.float32, device=self.ctx.device)
        for _ in range(self.epochs):
            opt.zero_grad()
            m.loss(tokens, y).backward()
            opt.step()
        with torch.no_grad():
            pred = m.predict(m.encode(tokens)).cpu().numpy()
        return tau_b(pred, score) if len(ids) > 1 else float("nan")

    def propose(self, s: int, ids: np.ndarray, score: np.ndarray) -> list[int]:
        """New cells decoded from the best cells' embeddings moved up the predictor's gradient."""
        m, pool, n = self.epds[s], set(int(i) for i in self.pools[s]), self.ctx.sp.n
        best = ids[np.argsort(-score, kind="stable")[: self.top]]
        e = m.encode(torch.as_tensor(tokens_of(self.ctx.sp, best), device=self.ctx.device)).detach()
        e.requires_grad_(True)
        (grad,) = torch.autograd.grad(m.predict(e).sum(), [e])
        new: list[int] = []
        for lam in (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0):
            with torch.no_grad():
                tokens = m.decode_logits(e + lam * grad).argmax(dim=-1).cpu().numpy()
            for i in ids_of_tokens(tokens, n):
                if int(i) not in pool and int(i) not in new and len(new) < self.max_new:
                    new.append(int(i))
            if len(new) >= self.max_new:
                break
        rest = [i for i in range(self.ctx.sp.size) if i not in pool and i not in new]
        if len(new) < self.max_new and rest:
            new += [int(i) for i in self.ctx.rngs[s].choice(rest, min(len(rest), self.max_new - len(new)),
                                                            replace=False)]
        return new

    def checkpoint(self, ctx: Context, params: dict, live: np.ndarray, last: bool) -> tuple:
        A = len(ctx.seeds)
        choice, est = np.zeros(A, dtype=np.int64), np.full(A, np.nan)
        fit_tau, sizes = np.full(A, np.nan), np.array([len(p) for p in self.pools])
        for s in np.flatnonzero(live):
            ids = np.array(sorted(self.pools[s]), dtype=np.int64)
            ppl = ctx.score(params, s, ids, ctx.valid(last))
            k = int(np.argmin(ppl))
            choice[s], est[s] = ids[k], ppl[k]
            if not last:
                score = normalised_score(ppl)
                fit_tau[s] = self.fit(s, ids, score)
                self.pools[s] = list(ids) + self.propose(s, ids, score)
        switch = np.log(np.where(np.isfinite(est), est, np.inf))
        return choice, est, switch, {"pool_size": sizes, "predictor_tau": fit_tau}
