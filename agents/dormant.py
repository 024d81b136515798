"""Dormant neurons (Sokar et al., 2023; DrM, Xu et al., 2024): a diagnostic for every agent, and DrM's perturbation.

A neuron of a layer is *tau-dormant* on a batch when its mean |activation| over the batch, divided by the mean of
that quantity over the layer's neurons, is <= tau. :func:`dormant_ratio` reports the fraction of dormant neurons per
layer and overall (dormant neurons / all neurons of the hooked layers, as XuGW-Kevin/DrM ``utils.cal_dormant_ratio``).

Which activation is measured follows the reference exactly: a forward hook on every ``nn.Linear`` keeps the layer's
output tensor, and the statistic is read *after* the whole forward. When the Linear is followed by an in-place
activation (DrQ-v2/DrM's ``nn.ReLU(inplace=True)``), that tensor has been overwritten with the post-ReLU values, so
hidden layers are measured after their ReLU; a Linear followed by an out-of-place op (the trunk's LayerNorm, the
policy head's tanh) is measured before it. The output layer counts as a layer, as in the reference.

One deviation from the reference's ``<``: the test is ``<=`` (the paper's definition). The two differ only on exact
ties, e.g. an all-zero layer, which ``<=`` reports as fully dormant and ``<`` as fully active.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass(frozen=True)
class DormantStats:
    """``ratio``: dormant / total neurons over all hooked layers; ``per_layer``: module name -> that layer's ratio."""

    ratio: float
    per_layer: dict[str, float] = field(default_factory=dict)
    dormant: int = 0
    total: int = 0

    def metrics(self, prefix: str, per_layer: bool = True) -> dict[str, float]:
        """``{prefix: ratio, prefix/<layer>: ratio, ...}`` for an agent's update metrics."""
        out = {prefix: self.ratio}
        if per_layer:
            out.update({f"{prefix}/{name}": r for name, r in self.per_layer.items()})
        return out


def _neuron_axis(module: nn.Module) -> int:
    return 1 if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d) else -1


@torch.no_grad()
def dormant_ratio(module: nn.Module, *inputs: object, tau: float = 0.025,
                  layer_types: Sequence[type[nn.Module]] = (nn.Linear,), **kwargs: object) -> DormantStats:
    """Run ``module(*inputs, **kwargs)`` once under ``no_grad`` and count tau-dormant neurons of its layers.

    ``layer_types``: which submodules are layers (default ``nn.Linear``, the reference's choice; a conv layer's
    neurons are its output channels, averaged over batch and space). A neuron's score is
    ``mean_batch |out| / mean_layer(mean_batch |out|)``; it is dormant when the score is <= ``tau``.
    Cost: one extra forward of ``module`` plus one abs-mean per layer and a single host sync.
    """
    layers = [(name, m) for name, m in module.named_modules() if isinstance(m, tuple(layer_types))]
    if not layers:
        raise ValueError(f"{type(module).__name__} has no {[t.__name__ for t in layer_types]} layer to measure")
    outputs: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, out))
               for name, m in layers]
    try:
        module(*inputs, **kwargs)
    finally:
        for h in handles:
            h.remove()
    counts, sizes = [], []
    for name, m in layers:  # read after the forward: in-place activations after a layer are included
        out = outputs[name]
        axis = _neuron_axis(m) % out.dim()
        score = out.abs().mean(dim=[d for d in range(out.dim()) if d != axis])  # (neurons,)
        counts.append((score <= tau * score.mean()).sum())
        sizes.append(score.numel())
    dormant = [int(c) for c in torch.stack(counts).tolist()]  # one sync for all layers
    per_layer = {name: d / n for (name, _), d, n in zip(layers, dormant, sizes, strict=True)}
    total = sum(sizes)
    return DormantStats(sum(dormant) / total, per_layer, sum(dormant), total)


@torch.no_grad()
def shrink_and_perturb(module: nn.Module, factor: float, generator: torch.Generator | None = None) -> None:
    """DrM's perturbation: every ``nn.Linear`` moves to ``factor * current + (1 - factor) * fresh init``.

    The fresh init is the agents' own (``nets.weight_init`` for a Linear: orthogonal weight, zero bias), drawn
    from ``generator`` layer by layer in module order. Other parameters (convs, LayerNorms) are left as they
    are, as in XuGW-Kevin/DrM ``utils.perturb`` (which only interpolates parameters of Linear modules).
    """
    factor = float(factor)
    for m in module.modules():
        if not isinstance(m, nn.Linear):
            continue
        fresh = nn.init.orthogonal_(torch.empty_like(m.weight), generator=generator)
        m.weight.mul_(factor).add_(fresh, alpha=1.0 - factor)
        if m.bias is not None:
            m.bias.mul_(factor)  # + (1 - factor) * 0, the fresh bias
