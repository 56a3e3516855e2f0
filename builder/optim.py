"""Per-slot SGD / ASGD with per-slot gradient-norm clipping (AWD-LSTM's optimiser, vectorised over slots).

Each slot clips its own gradient norm, takes its own step and switches to averaging on its own: after the
switch the update is the same SGD step (ASGD with t0 = 0, λ = 0) and ``ax`` follows ``torch.optim.ASGD``'s
running average of the iterates, which the trainer uses for validation and for the best checkpoint.
"""
from __future__ import annotations

import torch


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.view(-1, *([1] * (like.dim() - 1)))


class SlotSGD:
    """SGD with weight decay, clipping and NT-ASGD averaging for ``A`` slots at once, each with its own switch."""
    def __init__(self, params: dict, weight_decay: float, clip: float):
        self.params = params
        self.weight_decay = weight_decay
        self.clip = clip
        A = next(iter(params.values())).shape[0]
        device = next(iter(params.values())).device
        self.switched = torch.zeros(A, dtype=torch.bool, device=device)
        self.avg_steps = torch.zeros(A, device=device)
        self.ax = {k: p.detach().clone() for k, p in params.items()}
        self.any_switched = False  # host-side copy of switched.any(): step() never reads the device

    def grad_norms(self) -> torch.Tensor:
        """L2 norm of each slot's whole gradient, ``[A]`` (one pass per parameter, no temporaries)."""
        sq = sum(torch.linalg.vector_norm(p.grad.flatten(1), dim=1).square() for p in self.params.values())
        return sq.sqrt()

    @torch.no_grad()
    def step(self, lr: float, active: torch.Tensor) -> None:
        """One step at learning rate ``lr`` for the slots where ``active`` is true; clears the gradients.

        In place on the gradients (the embedding's is ``[A, 10000, H]``: temporaries of that size cost more than
        the arithmetic on 2 CPU cores).
        """
        coef = (self.clip / (self.grad_norms() + 1e-6)).clamp(max=1.0) if self.clip > 0 else None
        for p in self.params.values():
            step = p.grad
            if coef is not None:
                step.mul_(_view(coef, p))
            if self.weight_decay:
                step.add_(p, alpha=self.weight_decay)
            # a masked zero step, not a zero learning rate: a dead slot's NaN gradient must not reach its weights
            step.masked_fill_(~_view(active, p), 0.0)
            p.sub_(step, alpha=lr)
            p.grad = None
        if self.any_switched:
            self.avg_steps += (self.switched & active).float()
            mu = torch.where(self.avg_steps <= 2, torch.ones_like(self.avg_steps), 1.0 / (self.avg_steps - 1))
            mu = torch.where(self.switched & active, mu, torch.zeros_like(mu))
            for k, p in self.params.items():
                self.ax[k].add_(_view(mu, p) * (p - self.ax[k]))

    @torch.no_grad()
    def switch(self, mask: torch.Tensor) -> None:
        """Start averaging for the slots in ``mask`` (those already switched are left alone)."""
        new = mask & ~self.switched
        if bool(new.any()):
            for k, p in self.params.items():
                self.ax[k][new] = p[new]
            self.avg_steps[new] = 0
            self.switched |= new
            self.any_switched = True

    @torch.no_grad()
    def eval_params(self) -> dict:
        """Averaged weights for switched slots, current weights for the others."""
        if not self.any_switched:
            return {k: p.detach() for k, p in self.params.items()}
        return {k: torch.where(_view(self.switched, p), self.ax[k], p.detach()) for k, p in self.params.items()}

    @torch.no_grad()
    def restore(self, mask: torch.Tensor, weights: dict, switched: torch.Tensor, avg_steps: torch.Tensor) -> None:
        """Return the slots in ``mask`` to ``weights`` (as iterate and as average) and to the given switch and
        averaging count: DARTS's rollback loads the model it saved (the averaged weights once switched) and the
        optimiser saved with it."""
        for k, p in self.params.items():
            p[mask] = weights[k][mask]
            self.ax[k][mask] = weights[k][mask]
        self.switched[mask] = switched[mask]
        self.avg_steps[mask] = avg_steps[mask]
        self.any_switched = bool(self.switched.any())

    def state(self) -> dict:
        """What resuming needs (:mod:`builder.resume`): the switch, the averaging counts and the averages."""
        return {"switched": self.switched, "avg_steps": self.avg_steps, **{f"ax/{k}": v for k, v in self.ax.items()}}

    @torch.no_grad()
    def load_state(self, state: dict) -> None:
        """Continue from a unit's saved optimiser state (momentum-free SGD: the averages and the switch)."""
        self.switched.copy_(torch.as_tensor(state["switched"]))
        self.avg_steps.copy_(torch.as_tensor(state["avg_steps"]))
        for k, v in self.ax.items():
            v.copy_(torch.as_tensor(state[f"ax/{k}"]))
        self.any_switched = bool(self.switched.any())
