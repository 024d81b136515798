"""``robotrl worldenv train-vla``: behaviour cloning of the VLA (L1 on action chunks, as OpenVLA-OFT) on the expert
demos of all tasks at once; snapshots every ``vla.snapshot_every`` steps (the fidelity gate's BC policies at several
stages). Resumes from its stage state; ``vla/vla.pt`` is written at the end, ``vla/config.yaml`` records the settings
it trained with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from robotrl.workflows.worldenv.data import data_digest, load_data
from robotrl.workflows.worldenv.fit import fit, save_ckpt
from robotrl.workflows.worldenv.policies import build_vla, text_embeddings, vla_payload
from robotrl.workflows.worldenv.settings import load_config, record_settings, setup_torch


def bc_batch(data: list, text: dict[str, torch.Tensor], chunk: int, batch: int, rng: np.random.Generator,
             device: torch.device) -> tuple[torch.Tensor, ...]:
    """(frames, text, proprio, action chunks, mask) for ``batch`` random steps of ``load_data``'s episodes (the
    sampler of ``agent=vla``)."""
    from robotrl.agents.vla import bc_batch as sample

    return sample([(instr, ep, pidx) for _, instr, ep, pidx in data], text, chunk, batch, rng, device)


def train_vla(out: str | Path, overrides: list[str] = ()) -> dict[str, float]:
    out = Path(out)
    cfg = load_config(out, overrides, "train-vla")
    device = setup_torch(cfg)
    data = load_data(out, ["expert"], cfg.tasks)
    pdim, adim = len(data[0][3]), data[0][2].action.shape[1]
    policy, clip, tokenizer = build_vla(cfg, device, pdim, adim)
    text = text_embeddings(clip, tokenizer, [cfg.instructions[t] for t in cfg.tasks])
    policy.fit_normaliser(np.concatenate([ep.obs["state"][:, pidx] for _, _, ep, pidx in data]))
    opt = torch.optim.AdamW(policy.parameters(), lr=float(cfg.vla.lr), weight_decay=1e-4)
    rng = np.random.default_rng(int(cfg.seed))
    c = cfg.vla

    def loss_fn(step: int):
        f, t, p, a, m = bc_batch(data, text, int(c.chunk), int(c.batch_size), rng, device)
        return policy.bc_loss(f, t, p, a, m), {}

    record_settings(cfg, out, "train-vla")
    metrics = fit("vla", out / "vla", policy, opt, int(c.steps), lambda step: [loss_fn(step)], clip=float(c.grad_clip),
                  every=50, setting="vla.steps", payload_fn=lambda: vla_payload(cfg, policy, text),
                  snapshot_every=int(c.snapshot_every), generator=rng,
                  inputs={"data (expert)": data_digest(out, ["expert"], cfg.tasks)})
    save_ckpt(out / "vla" / "vla.pt", vla_payload(cfg, policy, text))
    print(f"vla: BC done, final L1 {metrics.get('loss', float('nan')):.4f} -> {out / 'vla' / 'vla.pt'}")
    return metrics


