"""ENAS (Pham et al., "Efficient Neural Architecture Search via Parameter Sharing", ICML 2018) on the reduced
spaces: an LSTM controller samples cells, REINFORCE trains it on rewards under the shared weights.

Every value follows the authors' PTB search (``melodyguan/enas``: ``scripts/ptb_search.sh``, ``src/ptb/main.py``,
``src/ptb/ptb_enas_controller.py``, ``src/ptb/ptb_enas_child.py``); where we differ, it says why.

**Controller** (``ptb_enas_controller.py``; ``lstm_size`` 100 and 1 layer from ``main.py``). An LSTM cell; every
parameter uniform in [−0.1, 0.1]. Our ``s0`` is ENAS's first node with its function fixed (DARTS's ``s0`` is
tanh): one LSTM step from the learned start input ``g_emb`` records its state, and the next input is the tanh
embedding. Node k then takes one step whose state is recorded and, from node 2 on, picks a predecessor j < k by
attention over the recorded states (``v · tanh(W₂h + W₁h_j)``) with the distance penalty ``(k − j)² / 12``; the
next input is ``h_j / (0.1 + k − j)``; a second step picks the activation (``w_soft``) and feeds its embedding
(``w_emb``). Every logit is ``tanh_constant · tanh(logit / temperature)`` with 2.5 and 5.0
(``--controller_tanh_constant``, ``--controller_temperature``). The authors' sampler never passes the LSTM state
from one step to the next (``prev_c``/``prev_h`` stay zero); we carry it, as the paper's "LSTM controller" and
the PyTorch port (``carpedm20/ENAS-pytorch``) do.

**Training** (``ptb_search.sh``). After every epoch of shared-weight training (``--controller_train_every=1``):
``--controller_train_steps=100`` Adam updates (``--controller_lr=0.001``, no decay, no weight decay), each the
mean gradient of ``--controller_num_aggregate=10`` samples. A sample's reward is ``80 / ppl`` of the cell under
the shared weights on one validation batch at a random position (``ptb_input_producer(..., randomize=True)``),
from a zero hidden state (the pipelines are reset before the controller trains and the RL graph does not carry,
``should_carry=False``), its loss clipped at 10 nats; plus ``--controller_entropy_weight=0.001`` × the sampled
decisions' entropy terms ``Σ −log p · p`` (added to the **reward**, not the loss). Baseline: an exponential moving
average from 0 with decay ``controller_bl_dec`` 0.99 (``main.py``), updated with each reward before that
reward's advantage is taken. Loss: ``Σ −log p(decisions) · (reward − baseline)``.

**Deriving** (paper, section 2.2): ``derive`` cells sampled from the trained policy, each scored on one validation
batch, the best returned. The paper says "several"; 100 is the PyTorch port's ``derive_num_sample``.

A validation batch here is ``eval_batch_size × bptt`` tokens of the preset (the authors': 20 × 35). Our search
epochs are the weight-sharing checkpoints, usually several per data epoch, so the controller keeps the authors'
ratio: after each, ``controller_steps × (epochs since the last one)`` updates (at least 1) — 10 per checkpoint at
the `cpu` preset's 10 per epoch. (Training all 100 at every checkpoint gave the controller ten times the
authors' updates per epoch of child training; its entropy fell from 3.45 to 1.29 nats within 0.2 epochs.)
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from nasbench_ptb.space import OPS, id_of_choices

from .engine import SlotGenotypes
from .search import Context, Method
from .ws import evaluate_all

N_OPS = len(OPS)
S0_OP = OPS.index("tanh")  # DARTS's s0 is a tanh: its fixed function in the controller's input
TANH_C, TEMPERATURE = 2.5, 5.0
LOSS_CLIP = 10.0  # nats: ``valid_loss = min(rl_loss, 10)``


def squash(logits: torch.Tensor) -> torch.Tensor:
    """The authors' logit squashing, 2.5 · tanh(logits / 5) (tanh constant and temperature of their PTB run)."""
    return TANH_C * torch.tanh(logits / TEMPERATURE)


class Controller(torch.nn.Module):
    """ENAS's LSTM controller: per node a predecessor (attention with the distance penalty) and an activation."""
    def __init__(self, nodes: int, hidden: int = 100, seed: int = 0):
        super().__init__()
        self.n = nodes
        self.g_emb = torch.nn.Parameter(torch.empty(1, hidden))
        self.w_emb = torch.nn.Embedding(N_OPS, hidden)
        self.lstm = torch.nn.LSTMCell(hidden, hidden)
        self.w_soft = torch.nn.Linear(hidden, N_OPS, bias=False)
        self.attn_1 = torch.nn.Linear(hidden, hidden, bias=False)
        self.attn_2 = torch.nn.Linear(hidden, hidden, bias=False)
        self.attn_v = torch.nn.Linear(hidden, 1, bias=False)
        g = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.empty(p.shape).uniform_(-0.1, 0.1, generator=g))

    def sample(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        """``count`` cells: local choices ``[count, n]`` (4·pred + op), ``Σ log p`` of their decisions, the
        sampled decisions' entropy terms ``Σ −log p · p`` (what the reward adds) and the policy's entropy along
        the way ``Σ H(decision)`` (a diagnostic; ``[count]`` each)."""
        dev = self.g_emb.device
        logp = torch.zeros(count, device=dev)
        ent = torch.zeros(count, device=dev)
        full = torch.zeros(count, device=dev)

        def pick(logits: torch.Tensor) -> torch.Tensor:
            nonlocal logp, ent, full
            lp = torch.log_softmax(logits, dim=-1)
            choice = torch.multinomial(lp.detach().exp().cpu(), 1, generator=generator).view(-1).to(dev)
            chosen = lp.gather(1, choice.view(-1, 1)).view(-1)
            logp = logp + chosen
            ent = ent + (-chosen * chosen.exp()).detach()
            full = full - (lp.exp() * lp).sum(dim=-1).detach()
            return choice

        state = self.lstm(self.g_emb.expand(count, -1))
        hs = [state[0]]  # s0's recorded state
        inp = self.w_emb(torch.full((count,), S0_OP, dtype=torch.long, device=dev))
        choices = []
        for k in range(1, self.n + 1):
            state = self.lstm(inp, state)
            if k == 1:  # node 1 reads s0: nothing to choose
                pred = torch.zeros(count, dtype=torch.long, device=dev)
            else:
                prev = torch.stack(hs, dim=1)  # [count, k, H]
                query = torch.tanh(self.attn_2(state[0]).unsqueeze(1) + self.attn_1(prev))
                logits = squash(self.attn_v(query).squeeze(-1))
                dist = (k - torch.arange(k, device=dev, dtype=logits.dtype)) ** 2
                pred = pick(logits - dist / 12.0)
            hs.append(state[0])
            chosen_h = torch.stack(hs[:-1], dim=1)[torch.arange(count, device=dev), pred]
            inp = chosen_h / (0.1 + (k - pred).to(chosen_h.dtype)).unsqueeze(-1)
            state = self.lstm(inp, state)
            op = pick(squash(self.w_soft(state[0])))
            inp = self.w_emb(op)
            choices.append(N_OPS * pred + op)
        return torch.stack(choices, dim=1), logp, ent, full


class Reinforce:
    """REINFORCE with the authors' baseline and entropy-in-the-reward for one controller."""

    def __init__(self, controller: Controller, seed: int, lr: float = 1e-3, entropy_weight: float = 1e-3,
                 baseline_decay: float = 0.99):
        self.c, self.entropy_weight, self.decay = controller, entropy_weight, baseline_decay
        self.opt = torch.optim.Adam(controller.parameters(), lr=lr)
        self.gen = torch.Generator().manual_seed(int(seed) + 77)
        self.baseline = 0.0
        self.last_entropy = float("nan")

    def step(self, aggregate: int, reward: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """One Adam update: the mean gradient of ``aggregate`` samples; ``reward(choices [k, n]) -> [k]`` (the
        validation part; the entropy bonus is added here). Returns the full rewards."""
        choices, logp, ent, full = self.c.sample(aggregate, self.gen)
        r = np.asarray(reward(choices.cpu().numpy()), dtype=np.float64) + self.entropy_weight * ent.cpu().numpy()
        adv = np.empty_like(r)
        for i, ri in enumerate(r):  # the baseline moves with each reward, then that reward's advantage is taken
            self.baseline -= (1 - self.decay) * (self.baseline - ri)
            adv[i] = ri - self.baseline
        loss = -(logp * torch.as_tensor(adv, dtype=logp.dtype, device=logp.device)).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.last_entropy = float(full.mean())
        return r

    @torch.no_grad()
    def draw(self, count: int) -> np.ndarray:
        """``count`` cells sampled from the controller's policy, as choices ``[count, n]`` (no gradient)."""
        return self.c.sample(count, self.gen)[0].cpu().numpy()


class Enas(Method):
    """ENAS (Pham et al. 2018), the real search phase: shared weights trained on controller-sampled cells, the
    controller by REINFORCE (module docstring: every value's source)."""
    name = "enas"

    def __init__(self, ctx: Context, controller_steps: int = 100, controller_aggregate: int = 10,
                 controller_lr: float = 1e-3, controller_hidden: int = 100, entropy_weight: float = 1e-3,
                 baseline_decay: float = 0.99, derive: int = 100, reward_c: float = 80.0):
        if min(controller_steps, controller_aggregate, controller_hidden, derive) < 1 or controller_lr <= 0 \
                or not 0 <= baseline_decay < 1 or entropy_weight < 0:
            raise ValueError("ENAS controller_steps, controller_aggregate, controller_hidden and derive must be ≥ 1, "
                             "controller_lr > 0, baseline_decay in [0, 1), entropy_weight ≥ 0")
        self.ctx, self.steps, self.aggregate, self.derive, self.c = (ctx, controller_steps, controller_aggregate,
                                                                     derive, reward_c)
        self.agents = [Reinforce(Controller(ctx.sp.n, controller_hidden, seed).to(ctx.device), seed, controller_lr,
                                 entropy_weight, baseline_decay) for seed in ctx.seeds]
        self.windows = [np.random.RandomState(int(s) + 49_979_687) for s in ctx.seeds]  # random valid batches
        self.genos = SlotGenotypes.of(list(ctx.sp), ctx.device)
        self.options = {"controller_steps": controller_steps, "controller_aggregate": controller_aggregate,
                        "controller_lr": controller_lr, "controller_hidden": controller_hidden,
                        "entropy_weight": entropy_weight, "baseline_decay": baseline_decay, "derive": derive,
                        "reward_c": reward_c}

    def genotypes(self) -> SlotGenotypes:
        """Each slot's next training cell, sampled from its controller."""
        ids = torch.as_tensor(np.concatenate([id_of_choices(a.draw(1).T) for a in self.agents]),
                              device=self.ctx.device)
        return SlotGenotypes(self.genos.preds[ids], self.genos.ops[ids], uniform=None)

    def updates(self, epochs: float) -> int:
        """Controller updates after ``epochs`` of shared-weight training: the authors' ``controller_steps`` per
        epoch, at least one."""
        return max(1, int(round(self.steps * epochs)))

    def batch(self, s: int) -> torch.Tensor:
        """One validation batch at a random position (``bptt + 1`` rows of the batchified prefix)."""
        data, bptt = self.ctx.valid_mid, self.ctx.p.bptt
        start = self.windows[s].randint(max(1, data.shape[0] - bptt))
        return data[start : start + bptt + 1]

    def losses(self, params: dict, s: int, ids: np.ndarray) -> np.ndarray:
        """Validation loss (nats) of cells ``ids`` under slot ``s``'s shared weights on one random validation batch."""
        genos = SlotGenotypes(self.genos.preds[ids], self.genos.ops[ids], uniform=None)
        return evaluate_all(params, s, genos, self.batch(s), self.ctx.p.bptt, amp=self.ctx.p.amp)

    def reward(self, loss: np.ndarray) -> np.ndarray:
        """``reward_c / ppl`` with the loss clipped at 10 nats (a non-finite loss counts as the clip)."""
        return self.c / np.exp(np.where(np.isfinite(loss), np.minimum(loss, LOSS_CLIP), LOSS_CLIP))

    def checkpoint(self, ctx: Context, params: dict, live: np.ndarray, last: bool) -> tuple:
        """Train each controller for this interval's updates, then derive: the best of ``derive`` sampled cells on
        one validation batch."""
        A = len(ctx.seeds)
        for s in np.flatnonzero(live):
            if not last:  # the controller trains after each search epoch; the last one only derives
                for _ in range(self.updates(ctx.interval())):
                    self.agents[s].step(self.aggregate, lambda ch, s=s: self.reward(
                        self.losses(params, s, id_of_choices(ch.T))))
        choice, est = np.zeros(A, dtype=np.int64), np.full(A, np.nan)
        for s in np.flatnonzero(live):  # derive: sampled cells, each scored on one validation batch
            ids = np.unique(id_of_choices(self.agents[s].draw(self.derive).T))
            ppl = np.exp(self.losses(params, s, ids))
            ppl = np.where(np.isfinite(ppl), ppl, np.inf)
            k = int(np.argmin(ppl))
            choice[s], est[s] = ids[k], ppl[k]
        entropy = np.array([a.last_entropy for a in self.agents])
        return choice, est, np.log(np.where(np.isfinite(est), est, np.inf)), {"entropy": entropy}
