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

from collections.abc import Callable, Sequence
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


def stats_from_scores(scores: Sequence[tuple[str, torch.Tensor]], tau: float = 0.025) -> DormantStats:
    """Count tau-dormant neurons from per-neuron scores ``mean_batch |activation|``, one ``(name, scores)`` per layer.

    A layer's scores are ``(..., neurons)``: leading axes are independent copies of the layer (ensemble members),
    each normalised by its own mean, and all their neurons count for that layer. One host sync for all layers.
    """
    if not scores:
        raise ValueError("no layer to measure")
    counts = torch.stack([(s <= tau * s.mean(dim=-1, keepdim=True)).sum() for _, s in scores])
    dormant = [int(c) for c in counts.tolist()]
    sizes = [s.numel() for _, s in scores]
    per_layer = {name: d / n for (name, _), d, n in zip(scores, dormant, sizes, strict=True)}
    total = sum(sizes)
    return DormantStats(sum(dormant) / total, per_layer, sum(dormant), total)


def neuron_scores(out: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """``mean_batch |out|`` per neuron (a conv layer's neurons are its output channels, averaged over space too)."""
    axis = _neuron_axis(layer) % out.dim()
    return out.abs().mean(dim=[d for d in range(out.dim()) if d != axis])


@torch.no_grad()
def layers_dormant_ratio(layers: Sequence[tuple[str, nn.Module]], forward: Callable[[], object],
                         tau: float = 0.025) -> DormantStats:
    """Hook the named ``layers``, run ``forward()`` once under ``no_grad``, count their tau-dormant neurons.

    Each layer's output is read after the whole forward (in-place activations that follow it are included, see the
    module docstring). Every layer must run in ``forward``; a layer that runs twice is measured on its last call.
    """
    outputs: dict[str, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, out))
               for name, m in layers]
    try:
        forward()
    finally:
        for h in handles:
            h.remove()
    missing = [name for name, _ in layers if name not in outputs]
    if missing:
        raise ValueError(f"layers {missing} did not run in the measured forward")
    return stats_from_scores([(name, neuron_scores(outputs[name], m)) for name, m in layers], tau)


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
    return layers_dormant_ratio(layers, lambda: module(*inputs, **kwargs), tau)


def merge_stats(parts: Sequence[tuple[str, DormantStats]]) -> DormantStats:
    """One DormantStats over several networks (e.g. an actor ensemble): layers prefixed ``<name>.``, overall ratio
    over all their neurons."""
    dormant, total = sum(s.dormant for _, s in parts), sum(s.total for _, s in parts)
    per_layer = {f"{name}.{layer}" if name else layer: r for name, s in parts for layer, r in s.per_layer.items()}
    return DormantStats(dormant / total, per_layer, dormant, total)


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


@torch.no_grad()
def world_model_dormant_stats(m: nn.Module, z: torch.Tensor, tau: float) -> tuple[DormantStats, DormantStats]:
    """TD-MPC2's (policy priors, Q ensemble) tau-dormant ratios on latents ``z`` (..., L) of world model ``m``
    (:class:`robotrl.agents.world_model.WorldModel`): one no-grad forward of every prior, then of every Q member on
    (z, the first prior's mean action). Uses no random draw.

    Layers are measured after their LayerNorm + Mish (hidden) or as output logits (last layer), as for DrQ-v2.
    """
    nets, parts, head = m.pi_nets(), [], None
    for k, net in enumerate(nets):
        layers = [(name, layer) for name, layer in net.named_modules() if isinstance(layer, nn.Linear)]
        out: dict[str, torch.Tensor] = {}
        parts.append((str(k) if len(nets) > 1 else "",
                      layers_dormant_ratio(layers, lambda net=net, out=out: out.setdefault("y", net(z)), tau)))
        head = out["y"] if head is None else head
    action = torch.tanh(head.chunk(2, dim=-1)[0])
    record: list[torch.Tensor] = []
    m._Qs(torch.cat([z, action], dim=-1), record=record)
    q_scores = [(f"layer{i}", h.abs().mean(dim=1)) for i, h in enumerate(record)]  # (num_q, neurons) each
    return merge_stats(parts), stats_from_scores(q_scores, tau)
