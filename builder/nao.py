"""NAO with weight sharing (NAO-WS; Luo et al., "Neural Architecture Optimization", NeurIPS 2018): an
encoder–predictor–decoder (EPD) over cell sequences, and a pool that grows only with the cells the decoder
proposes.

Every value below follows the authors' NAO-WS search script (``NAO_V1/train_search.py`` and its ``encoder.py``,
``controller.py`` in ``renqianluo/NAO_pytorch``); a value scaled to our spaces says how, and why.

**Cell sequence.** ``pred_1, op_1, …, pred_n, op_n`` (predecessor tokens 0..n−1, op tokens n..n+3); the encoder
reads it two tokens per step (the script's ``source_length / encoder_length = 2``), so one LSTM step per node.

**EPD** (``controller_*`` flags). Encoder: embedding (``emb_size`` 32 per token, 64 per step) → 1-layer LSTM of
``hidden`` 64 → every output L2-normalised; the cell's embedding is the normalised mean of the outputs. Predictor:
``mlp_layers`` 0, i.e. one linear layer on the embedding and a sigmoid. Decoder: a 1-layer LSTM started from
(embedding, embedding), dot-product attention over the encoder's outputs (``tanh(W[h; context])``), greedy, with
the tokens a position cannot take masked (a node reads an earlier node; an op is an op). Loss = ``trade_off`` 0.8 ·
prediction MSE + 0.2 · reconstruction cross-entropy; Adam, ``lr`` 1e-3, no weight decay (``l2_reg`` 0), gradients
clipped at ``grad_bound`` 5, ``epd_epochs`` 1000 passes of batch 100 over the pool at each search epoch. Targets:
the pool's scores min–max normalised, 1 for the best (lowest validation ppl under the shared weights).

**Search.** A random initial pool (``controller_seed_arch`` 600 of a space of ~10^12 cells; here ``pool_fraction``
0.25 of the space: 8 of 32, 96 of 384). The shared weights train on cells drawn uniformly from the pool
(``arch_pool_prob`` None). At each search epoch every pool cell is scored under the shared weights, the EPD trains
on the pool, and new cells are decoded from the ``top`` pool cells (the script's 100 of 600: a sixth of the pool)
with their encoder outputs moved up the predictor's gradient, ``outputs + λ·∂pred/∂outputs`` (then normalised
again), for step sizes λ = 1, 2, … until ``new`` cells (its 300 of 600: half the pool) have been found that are
neither in the pool nor already proposed, or λ passes ``max_step`` 50. The new cells replace the pool's worst,
so the pool keeps its size; **no cell enters the pool that the decoder did not propose** (when the decoder finds
fewer, fewer are replaced). The choice at each search epoch: the pool's best under the shared weights (the
script reranks its top 5 by short standalone training instead; weight-sharing NAO takes the best).

Not carried over: ``controller_expand`` (augmenting the EPD's data by swapping the two inputs of a CNN node: a
recurrent node has one input) and with it the 90/10 split of the pool into EPD train/valid data; the EPD here
trains on the whole pool.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from nasbench_ptb.analyses import tau_b
from nasbench_ptb.space import OPS, id_of_choices

from .engine import SlotGenotypes
from .search import Context, Method

N_OPS = len(OPS)


def tokens_of(sp, ids) -> np.ndarray:
    """``[len(ids), 2n]`` token sequences."""
    out = []
    for i in ids:
        g = sp.from_id(int(i))
        out.append([t for p, o in zip(g.preds, g.ops) for t in (p, sp.n + o)])
    return np.array(out, dtype=np.int64)


def ids_of_tokens(tokens: np.ndarray, n: int) -> np.ndarray:
    """Architecture ids of decoded token sequences (the inverse of :func:`tokens_of`)."""
    return id_of_choices((N_OPS * tokens[:, 0::2] + (tokens[:, 1::2] - n)).T)


class EPD(torch.nn.Module):
    """Encoder, predictor and decoder of one search (see the module docstring for each value's source)."""

    def __init__(self, nodes: int, hidden: int = 64, emb: int = 32, seed: int = 0):
        super().__init__()
        self.n, V = nodes, nodes + N_OPS
        self.embed = torch.nn.Embedding(V, emb)
        self.encoder = torch.nn.LSTM(2 * emb, hidden, batch_first=True)
        self.regressor = torch.nn.Linear(hidden, 1)
        self.dec_embed = torch.nn.Embedding(V + 1, hidden)  # + the start token
        self.decoder = torch.nn.LSTMCell(hidden, hidden)
        self.attend = torch.nn.Linear(2 * hidden, hidden)
        self.out = torch.nn.Linear(hidden, V)
        mask = torch.full((2 * nodes, V), float("-inf"))
        for k in range(1, nodes + 1):
            mask[2 * (k - 1), :k] = 0.0  # the predecessor of node k: 0..k-1
            mask[2 * (k - 1) + 1, nodes:] = 0.0  # an op
        self.register_buffer("valid", mask)
        g = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():  # the script's uniform initialisation (INITRANGE 0.04 in its encoder)
            for p in self.parameters():
                p.copy_(torch.empty(p.shape).uniform_(-0.04, 0.04, generator=g))

    def outputs(self, tokens: torch.Tensor) -> torch.Tensor:
        """The encoder's normalised outputs ``[B, n, hidden]`` (one step per node: its two tokens)."""
        x = self.embed(tokens).reshape(tokens.shape[0], self.n, -1)
        out, _ = self.encoder(x)
        return torch.nn.functional.normalize(out, dim=-1)

    @staticmethod
    def embedding(outputs: torch.Tensor) -> torch.Tensor:
        """The architecture embedding: the encoder outputs averaged over the sequence, L2-normalised."""
        return torch.nn.functional.normalize(outputs.mean(dim=1), dim=-1)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Embedding of token sequences ``[B, 2n]``."""
        return self.embedding(self.outputs(tokens))

    def predict(self, e: torch.Tensor) -> torch.Tensor:
        """Predicted score (sigmoid, higher is better) of embeddings."""
        return torch.sigmoid(self.regressor(e)).view(-1)

    def decode_logits(self, outputs: torch.Tensor, tokens: torch.Tensor | None = None) -> torch.Tensor:
        """Logits per position ``[B, 2n, V]`` from the encoder's outputs; teacher-forced on ``tokens`` when given,
        else greedy."""
        e = self.embedding(outputs)
        B = e.shape[0]
        state = (e, e)
        inp = self.dec_embed(torch.full((B,), self.n + N_OPS, dtype=torch.long, device=e.device))
        logits = []
        for t in range(2 * self.n):
            state = self.decoder(inp, state)
            h = state[0]
            weights = torch.softmax(torch.einsum("bh,bkh->bk", h, outputs), dim=-1)
            context = torch.einsum("bk,bkh->bh", weights, outputs)
            lg = self.out(torch.tanh(self.attend(torch.cat([h, context], dim=-1)))) + self.valid[t]
            logits.append(lg)
            nxt = tokens[:, t] if tokens is not None else lg.argmax(dim=-1)
            inp = self.dec_embed(nxt)
        return torch.stack(logits, dim=1)

    def loss(self, tokens: torch.Tensor, score: torch.Tensor, trade_off: float = 0.8) -> torch.Tensor:
        """``trade_off`` × predictor MSE + (1 − ``trade_off``) × decoder reconstruction NLL, as NAO's joint loss."""
        out = self.outputs(tokens)
        mse = (self.predict(self.embedding(out)) - score).pow(2).mean()
        logits = self.decode_logits(out, tokens)
        ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1))
        return trade_off * mse + (1 - trade_off) * ce

    def moved(self, tokens: torch.Tensor, step: float) -> torch.Tensor:
        """Greedy decodes of the cells' encoder outputs moved ``step`` up the predictor's gradient."""
        out = self.outputs(tokens).detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.predict(self.embedding(out)).sum(), [out])
        with torch.no_grad():
            new = torch.nn.functional.normalize(out + step * grad, dim=-1)
            return self.decode_logits(new).argmax(dim=-1)


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
    """NAO (Luo et al. 2018), the real search phase (NAO-WS): shared weights trained on pool cells, the pool grown
    only by decoder proposals (module docstring: every value's source)."""
    name = "nao"

    def __init__(self, ctx: Context, pool_fraction: float = 0.25, new: int | None = None, top: int | None = None,
                 epd_epochs: int = 1000, epd_batch: int = 100, epd_hidden: int = 64, max_step: int = 50,
                 lr: float = 1e-3, trade_off: float = 0.8, grad_bound: float = 5.0):
        N = ctx.sp.size
        size = max(2, int(round(pool_fraction * N))) if 0 < pool_fraction <= 1 else 0
        new = max(1, size // 2) if new is None else new
        top = max(1, math.ceil(size / 6)) if top is None else top
        if not size or not 1 <= new <= size or not 1 <= top <= size \
                or min(epd_epochs, epd_batch, epd_hidden, max_step) < 1 or not 0 <= trade_off <= 1 or lr <= 0:
            raise ValueError(f"NAO needs pool_fraction in (0, 1], 1 ≤ new ≤ pool size ({size}), 1 ≤ top ≤ pool "
                             "size, epd_epochs, epd_batch, epd_hidden and max_step ≥ 1, trade_off in [0, 1], lr > 0")
        self.ctx, self.new, self.top, self.epochs, self.batch = ctx, new, top, epd_epochs, epd_batch
        self.max_step, self.trade_off, self.grad_bound = max_step, trade_off, grad_bound
        self.pools = [list(rng.choice(N, size, replace=False)) for rng in ctx.rngs]
        self.draws = [np.random.RandomState(int(s) + 15_485_863) for s in ctx.seeds]  # the training cells
        self.shuffles = [np.random.RandomState(int(s) + 32_452_843) for s in ctx.seeds]  # the EPD's batches
        self.epds = [EPD(ctx.sp.n, epd_hidden, seed=s).to(ctx.device) for s in ctx.seeds]
        self.opts = [torch.optim.Adam(m.parameters(), lr=lr) for m in self.epds]
        self.genos = SlotGenotypes.of(list(ctx.sp), ctx.device)
        self.options = {"pool_fraction": pool_fraction, "new": new, "top": top, "epd_epochs": epd_epochs,
                        "epd_batch": epd_batch, "epd_hidden": epd_hidden, "max_step": max_step, "lr": lr,
                        "trade_off": trade_off, "grad_bound": grad_bound}

    def genotypes(self) -> SlotGenotypes:
        """Each slot's next training cell, drawn uniformly from its pool."""
        ids = torch.as_tensor([pool[d.randint(len(pool))] for pool, d in zip(self.pools, self.draws)],
                              device=self.ctx.device)
        return SlotGenotypes(self.genos.preds[ids], self.genos.ops[ids], uniform=None)

    def fit(self, s: int, ids: np.ndarray, score: np.ndarray) -> float:
        """Train slot ``s``'s EPD on (cells, scores); the predictor's tau-b on them after training."""
        m, opt = self.epds[s], self.opts[s]
        tokens = torch.as_tensor(tokens_of(self.ctx.sp, ids), device=self.ctx.device)
        y = torch.as_tensor(score, dtype=torch.float32, device=self.ctx.device)
        for _ in range(self.epochs):
            order = torch.as_tensor(self.shuffles[s].permutation(len(ids)), device=self.ctx.device)
            for b in range(0, len(ids), self.batch):
                idx = order[b : b + self.batch]
                opt.zero_grad()
                m.loss(tokens[idx], y[idx], self.trade_off).backward()
                torch.nn.utils.clip_grad_norm_(m.parameters(), self.grad_bound)
                opt.step()
        with torch.no_grad():
            pred = m.predict(m.encode(tokens)).cpu().numpy()
        return tau_b(pred, score) if len(ids) > 1 else float("nan")

    def propose(self, s: int, ids: np.ndarray, score: np.ndarray) -> list[int]:
        """Cells decoded from the ``top`` cells moved up the predictor's gradient (λ = 1, 2, …, ``max_step``):
        at most ``new``, none in ``ids``; possibly fewer, never filled up by other means."""
        m, pool = self.epds[s], {int(i) for i in ids}
        best = ids[np.argsort(-score, kind="stable")[: self.top]]
        tokens = torch.as_tensor(tokens_of(self.ctx.sp, best), device=self.ctx.device)
        found: list[int] = []
        for step in range(1, self.max_step + 1):
            for i in ids_of_tokens(m.moved(tokens, float(step)).cpu().numpy(), self.ctx.sp.n):
                if int(i) not in pool and int(i) not in found and len(found) < self.new:
                    found.append(int(i))
            if len(found) >= self.new:
                break
        return found

    def checkpoint(self, ctx: Context, params: dict, live: np.ndarray, last: bool) -> tuple:
        """Score the pool, return its best; then (not at the last epoch) fit the EPD and let the proposals replace
        the worst."""
        A, N = len(ctx.seeds), ctx.sp.size
        choice, est = np.zeros(A, dtype=np.int64), np.full(A, np.nan)
        fit_tau = np.full(A, np.nan)
        pool_mask, proposed = np.zeros((A, N), dtype=np.int8), np.zeros((A, N), dtype=np.int8)
        for s in np.flatnonzero(live):
            ids = np.asarray(self.pools[s], dtype=np.int64)
            pool_mask[s, ids] = 1
            ppl = ctx.score(params, s, ids, ctx.valid(last))
            k = int(np.argmin(ppl))
            choice[s], est[s] = ids[k], ppl[k]
            if not last:
                score = normalised_score(ppl)
                fit_tau[s] = self.fit(s, ids, score)
                found = self.propose(s, ids, score)
                proposed[s, found] = 1
                keep = ids[np.argsort(-score, kind="stable")[: len(ids) - len(found)]]  # the worst make room
                self.pools[s] = [int(i) for i in keep] + found
        switch = np.log(np.where(np.isfinite(est), est, np.inf))
        return choice, est, switch, {"pool": pool_mask, "proposed": proposed, "predictor_tau": fit_tau}
