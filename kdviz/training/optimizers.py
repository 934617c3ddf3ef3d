"""Muon for convolution filters, Nesterov SGD for everything else, as one optimizer.

The current airbench record (``airbench94_muon``) reaches airbench94's accuracy in 8 epochs instead
of 9.9 by giving the 3×3 filters orthogonalised updates: each filter bank's momentum, seen as an
``out × (in·k·k)`` matrix, is replaced by the nearest semi-orthogonal matrix (a few Newton–Schulz
steps, torch's own), so every direction of the bank moves by the same amount however small its
gradient. The filters' norm is reset to √out before each step instead of being decayed: a filter
followed by batch norm is scale-invariant, so its norm only sets its effective learning rate, and
fixing it keeps that rate the schedule's. Biases, norm parameters and the classifier head keep
Nesterov SGD with weight decay.

``torch.optim.Muon`` takes 2-D parameters only, and has no renormalisation; this class keeps both
kinds of group in one optimizer, so a run saves and resumes one state.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.optim._muon import DEFAULT_A, DEFAULT_B, DEFAULT_C, _zeropower_via_newtonschulz
from torch.optim.sgd import sgd

NS_COEFFICIENTS = (DEFAULT_A, DEFAULT_B, DEFAULT_C)


class FilterMuon(torch.optim.Optimizer):
    """Each parameter group is a Muon group (``"muon": True``: 4-D filters) or an SGD one.

    Muon groups: heavy-ball momentum (Nesterov), orthogonalised with ``ns_steps`` Newton–Schulz
    iterations, the weight renormalised to norm √out first; no weight decay. SGD groups: torch's
    Nesterov SGD with their ``weight_decay``.
    """

    def __init__(
        self,
        params: Iterable[dict],
        lr: float,
        momentum: float = 0.85,
        muon_momentum: float = 0.6,
        ns_steps: int = 3,
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=0.0, muon=False)
        defaults |= dict(muon_momentum=muon_momentum, ns_steps=ns_steps)
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["muon"] and any(p.ndim < 2 for p in group["params"]):
                raise ValueError("a Muon group takes weight matrices or filter banks, not 1-D parameters")

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if group["muon"]:
                for p in params:
                    self._muon_step(p, group)
                continue
            buffers = [self.state[p].get("momentum_buffer") for p in params]
            sgd(
                params,
                [p.grad for p in params],
                buffers,
                weight_decay=group["weight_decay"],
                momentum=group["momentum"],
                lr=group["lr"],
                dampening=0.0,
                nesterov=group["momentum"] > 0,
                maximize=False,
            )
            for p, buffer in zip(params, buffers, strict=True):
                self.state[p]["momentum_buffer"] = buffer
        return loss

    def _muon_step(self, p: torch.Tensor, group: dict) -> None:
        grad, momentum = p.grad, group["muon_momentum"]
        assert grad is not None
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p)
        buffer = state["momentum_buffer"]
        buffer.mul_(momentum).add_(grad)
        direction = grad.add(buffer, alpha=momentum)  # Nesterov
        p.mul_(math.sqrt(p.size(0)) / p.norm().clamp_min(1e-12))
        matrix = direction.reshape(len(p), -1)
        update = _zeropower_via_newtonschulz(matrix, NS_COEFFICIENTS, group["ns_steps"], 1e-7)
        p.add_(update.view_as(p).to(p.dtype), alpha=-group["lr"])


def normalised_filters(model: nn.Module) -> list[torch.Tensor]:
    """The filters Muon may take: of convolutions whose next weighted layer is a norm layer.

    Renormalising a filter bank is harmless only when a norm layer undoes its scale; a convolution
    followed by anything else (airnet's whitening stem, a classifier) keeps SGD. "Next" is the order
    the modules were registered in, which is the order of the forward pass in every network here.
    """
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, *NORMS))]
    return [
        conv.weight
        for conv, after in zip(layers, layers[1:], strict=False)
        if isinstance(conv, nn.Conv2d) and isinstance(after, NORMS)
    ]


NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
