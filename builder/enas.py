"""ENAS (Pham et al., 2018) on the reduced spaces: an LSTM controller samples cells, REINFORCE trains it.

Per node k the controller picks a predecessor (k choices) and then an activation (4), each step fed the
embedding of the previous decision; logits are ``2.5·tanh(logits / 5)`` (ENAS's tanh constant and temperature).
Shared weights train on the controller's samples (one per mini-batch per search); at each search epoch the
controller trains for ``controller_steps`` batches of ``controller_batch`` samples: reward ``80 / ppl`` of each
sample under the shared weights on one validation window (windows rotate over the validation prefix),
exponential-moving-average baseline (decay 0.95), entropy bonus 1e-4, Adam. The choice (ENAS's ``derive``):
``derive`` sampled cells scored under the shared weights on the validation prefix, the best one.

Scaled to the presets' budget: ENAS trains 2000 controller steps per epoch at lr 3.5e-4; here a search epoch has
``controller_steps`` (default 50) batched steps, so the default lr is 10× larger (3.5e-3).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from nasbench_ptb.space import id_of_choices

from .engine import SlotGenotypes
from .search import Context, Method
from .ws import evaluate_all

OPS = 4
TANH_C, TEMPERATURE = 2.5, 5.0


class Controller(torch.nn.Module):
    def __init__(self, nodes: int, hidden: int = 100, seed: int = 0):
        super().__init__()
        self.n = nodes
        self.embed = torch.nn.Embedding(nodes + OPS + 1, hidden)  # predecessor tokens, op tokens, start
        self.lstm = torch.nn.LSTMCell(hidden, hidden)
        self.pred_head = torch.nn.Linear(hidden, nodes)
        self.op_head = torch.nn.Linear(hidden, OPS)
        g = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for p in self.parameters():  # ENAS initialises the controller uniformly in [-0.1, 0.1]
                p.copy_(torch.empty(p.shape).uniform_(-0.1, 0.1, generator=g))

    def sample(self, count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``count`` cells: local choices ``[count, n]`` (4·pred + op), their log-probability and entropy ``[count]``."""
        dev = self.pred_head.weight.device
        inp = self.embed(torch.full((count,), self.n + OPS, dtype=torch.long, device=dev))
        state = None
        logp = torch.zeros(count, device=dev)
        entropy = torch.zeros(count, device=dev)
        choices = []
        for k in range(1, self.n + 1):
            picked = []
            for head, width, offset in ((self.pred_head, k, 0), (self.op_head, OPS, self.n)):
                state = self.lstm(inp, state)
                logits = TANH_C * torch.tanh(head(state[0])[:, :width] / TEMPERATURE)
                lp = torch.log_softmax(logits, dim=-1)
                pick = torch.multinomial(lp.detach().exp().cpu(), 1, generator=generator).view(-1).to(dev)
                logp = logp + lp.gather(1, pick.view(-1, 1)).view(-1)
                entropy = entropy - (lp.exp() * lp).sum(dim=-1)
                inp = self.embed(pick + offset)
                picked.append(pick)
            choices.append(OPS * picked[0] + picked[1])
        return torch.stack(choices, dim=1), logp, entropy


class Reinforce:
    """REINFORCE with a moving-average baseline and an entropy bonus for one controller."""

    def __init__(self, controller: Controller, seed: int, lr: float, entropy_weight: float = 1e-4,
                 baseline_decay: float = 0.95):
        self.c, self.entropy_weight, self.decay = controller, entropy_weight, baseline_decay
        self.opt = torch.optim.Adam(controller.parameters(), lr=lr)
        self.gen = torch.Generator().manual_seed(int(seed) + 77)
        self.baseline: float | None = None
        self.last_entropy = float("nan")

    def step(self, batch: int, reward: Callable[[np.ndarray], np.ndarray]) -> None:
        """One update from ``batch`` samples; ``reward(choices [batch, n]) -> [batch]``."""
        choices, logp, entropy = self.c.sample(batch, self.gen)
        r = np.asarray(reward(choices.cpu().numpy()), dtype=np.float64)
        mean = float(r.mean())
        self.baseline = mean if self.baseline is None else self.decay * self.baseline + (1 - self.decay) * mean
        adv = torch.as_tensor(r - self.baseline, dtype=logp.dtype, device=logp.device)
        loss = -(logp * adv).mean() - self.entropy_weight * entropy.mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.last_entropy = float(entropy.mean().detach())

    @torch.no_grad()
    def draw(self, count: int) -> np.ndarray:
        return self.c.sample(count, self.gen)[0].cpu().numpy()


class Enas(Method):
    name = "enas"

    def __init__(self, ctx: Context, controller_steps: int = 50, controller_batch: int = 10,
                 controller_lr: float = 3.5e-3, controller_hidden: int = 100, derive: int = 100,
                 reward_c: float = 80.0):
        if min(controller_steps, controller_batch, controller_hidden, derive) < 1:
            raise ValueError("ENAS controller_steps, controller_batch, controller_hidden and derive must be ≥ 1")
        self.ctx, self.steps, self.batch, self.derive, self.c = ctx, controller_steps, controller_batch, derive, reward_c
        self.agents = [Reinforce(Controller(ctx.sp.n, controller_hidden, seed).to(ctx.device), seed, controller_lr)
                       for seed in ctx.seeds]
        self.genos = SlotGenotypes.of(list(ctx.sp), ctx.device)
        self.window = 0
        self.options = {"controller_steps": controller_steps, "controller_batch": controller_batch,
                        "controller_lr": controller_lr, "controller_hidden": controller_hidden, "derive": derive,
                        "reward_c": reward_c}

    def genotypes(self) -> SlotGenotypes:
        ids = torch.as_tensor(np.concatenate([id_of_choices(a.draw(1).T) for a in self.agents]),
                              device=self.ctx.device)
        return SlotGenotypes(self.genos.preds[ids], self.genos.ops[ids], uniform=None)

    def _window(self) -> torch.Tensor:
        data, bptt = self.ctx.valid_mid, self.ctx.p.bptt
        if self.window + bptt + 1 > data.shape[0]:
            self.window = 0
        w = data[self.window : self.window + bptt + 1]
        self.window += bptt
        return w

    def checkpoint(self, ctx: Context, params: dict, live: np.ndarray, last: bool) -> tuple:
        for s in np.flatnonzero(live):
            def reward(choices: np.ndarray, s=s) -> np.ndarray:
                ids = id_of_choices(choices.T)
                genos = SlotGenotypes(self.genos.preds[ids], self.genos.ops[ids], uniform=None)
                loss = evaluate_all(params, s, genos, self._window(), ctx.p.bptt, amp=ctx.p.amp)
                return np.where(np.isfinite(loss), self.c / np.exp(np.minimum(loss, 700.0)), 0.0)

            for _ in range(self.steps):
                self.agents[s].step(self.batch, reward)
        cands = [id_of_choices(a.draw(self.derive).T) for a in self.agents]
        choice, est, switch = ctx.best_of(params, live, cands, last)
        entropy = np.array([a.last_entropy for a in self.agents])
        return choice, est, switch, {"entropy": entropy}
