"""DrM: dormant ratio, perturbation, schedules, ablation flags, checkpoints, config, trainer smoke + exact resume."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
import torch
from robotrl.agents import make_agent
from robotrl.agents.dormant import dormant_ratio, shrink_and_perturb
from robotrl.agents.drm import DrMAgent
from robotrl.agents.drqv2 import DrQV2Agent
from robotrl.agents.nets import schedule
from torch import nn

from robotrl.errors import CheckpointError, ConfigError
from robotrl.workflows.train import Trainer
from tests.conftest import assert_same_tensors
from tests.test_drqv2 import ACTION, B, FixedReplay, random_obs, space

torch.set_num_threads(1)

BASE = {"lr": 1e-3, "feature_dim": 16, "hidden_dim": 32, "critic_target_tau": 0.01, "num_expl_steps": 2,
        "update_every_steps": 1, "stddev_schedule": "linear(1.0,0.1,100)", "stddev_clip": 0.3,
        "batch_size": B, "nstep": 3, "discount": 0.99, "seed": 0}
FLAGS = ("perturb", "awaken_exploration", "expectile_exploitation")


def make_drm(**kw) -> DrMAgent:
    return DrMAgent(space(), ACTION, "cpu", **{**BASE, "perturb_interval": 4, **kw})


def off(**kw) -> dict:
    return {**dict.fromkeys(FLAGS, False), **kw}


def _roundtrip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


# ------------------------------------------------------------------ dormant ratio
def _hand_built(inplace: bool = True) -> nn.Sequential:
    """Linear(3->5) -> ReLU -> Linear(5->2); for inputs x >= 0 (not all 0), hidden neurons are:
    0: all-zero row (dormant), 1: 1e-4 * sum(x) (score ~1e-4 << 0.025: dormant), 2: -sum(x) (dead after ReLU),
    3 and 4: sum(x) (active). Output neurons: 2 * h3 and h4 (both active)."""
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(inplace=inplace), nn.Linear(5, 2))
    with torch.no_grad():
        net[0].bias.zero_()
        net[0].weight.copy_(torch.tensor([[0.0] * 3, [1e-4] * 3, [-1.0] * 3, [1.0] * 3, [1.0] * 3]))
        net[2].bias.zero_()
        net[2].weight.copy_(torch.tensor([[0, 0, 0, 2.0, 0], [0, 0, 0, 0, 1.0]]))
    return net


def test_dormant_ratio_on_a_hand_built_network():
    x = torch.rand(64, 3) + 0.1
    stats = dormant_ratio(_hand_built(), x)
    # In-place ReLU: the hooked Linear output is read after the forward, i.e. post-ReLU (as the reference).
    assert stats.per_layer == {"0": 3 / 5, "2": 0.0}
    assert (stats.dormant, stats.total) == (3, 7) and stats.ratio == pytest.approx(3 / 7)
    # Out-of-place ReLU: the Linear's own (pre-activation) output, where neuron 2 is large (-sum x): active.
    assert dormant_ratio(_hand_built(inplace=False), x).per_layer == {"0": 2 / 5, "2": 0.0}
    # tau is a ratio to the layer's mean: with tau=0 only exact zeros count; a neuron exactly at tau counts (<=).
    assert dormant_ratio(_hand_built(), x, tau=0.0).per_layer["0"] == 2 / 5
    tie = nn.Linear(1, 2)
    with torch.no_grad():
        tie.weight.copy_(torch.tensor([[1.0], [3.0]]))
        tie.bias.zero_()
    # scores 1 and 3, layer mean 2: neuron 0 sits exactly at tau = 0.5
    assert dormant_ratio(tie, torch.ones(4, 1), tau=0.5).per_layer == {"": 0.5}
    assert dormant_ratio(tie, torch.ones(4, 1), tau=0.49).per_layer == {"": 0.0}
    m = stats.metrics("actor_dormant_ratio")
    assert m == {"actor_dormant_ratio": stats.ratio, "actor_dormant_ratio/0": 0.6, "actor_dormant_ratio/2": 0.0}


def test_dormant_ratio_conv_channels_and_no_grad():
    conv = nn.Conv2d(2, 4, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[1:, 0] = 1.0
        conv.bias.zero_()
    x = torch.rand(3, 2, 5, 5, requires_grad=True)
    stats = dormant_ratio(conv, x, layer_types=(nn.Conv2d,))
    assert stats.per_layer == {"": 0.25} and x.grad is None
    with pytest.raises(ValueError, match="no"):
        dormant_ratio(nn.ReLU(), x)


def test_actor_dormant_ratio_hooks_every_actor_linear():
    agent = make_drm()
    feats = torch.randn(B, agent.encoder.repr_dim)
    stats = agent.actor_dormant(feats)
    assert list(stats.per_layer) == ["trunk.0", "policy.0", "policy.2", "policy.4"]  # reference: all nn.Linear
    assert stats.total == 16 + 32 + 32 + 2


# ------------------------------------------------------------------ perturbation
def test_shrink_and_perturb_is_the_exact_interpolation():
    net = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    gen = torch.Generator().manual_seed(5)
    replay_gen = torch.Generator().manual_seed(5)
    shrink_and_perturb(net, 0.3, gen)
    for i in (0, 2):  # fresh init drawn in module order from the same generator
        fresh = nn.init.orthogonal_(torch.empty(net[i].weight.shape), generator=replay_gen)
        torch.testing.assert_close(net[i].weight, 0.3 * before[f"{i}.weight"] + 0.7 * fresh)
        torch.testing.assert_close(net[i].bias, 0.3 * before[f"{i}.bias"])
    for k in ("1.weight", "1.bias"):  # LayerNorm untouched
        assert torch.equal(net.state_dict()[k], before[k])
    shrink_and_perturb(net, 1.0, gen)
    torch.testing.assert_close(net[0].weight, 0.3 * before["0.weight"] + 0.7 * nn.init.orthogonal_(
        torch.empty(6, 4), generator=torch.Generator().manual_seed(5)))


def test_drm_perturbation_moves_every_net_by_the_factor_and_resets_optimisers():
    agent = make_drm()
    replay = FixedReplay(space())
    for step in range(3):
        agent.update(replay, step)
    agent.dormant_ratio = 0.1  # factor = clip(1 - 2 * 0.1, 0.2, 1.0) = 0.8
    assert agent.perturb_factor == pytest.approx(0.8)
    nets = {"actor": agent.actor, "critic": agent.critic, "critic_target": agent.critic_target,
            "value_net": agent.value_net}
    before = {n: {k: v.clone() for k, v in m.state_dict().items()} for n, m in nets.items()}
    enc_before = {k: v.clone() for k, v in agent.encoder.state_dict().items()}
    gen_state = agent.generator.get_state()
    assert agent.perturb_networks() == pytest.approx(0.8)
    replay_gen = torch.Generator().manual_seed(0)
    replay_gen.set_state(gen_state)
    for name, module in nets.items():
        for mod_name, m in module.named_modules():
            if isinstance(m, nn.Linear):
                fresh = nn.init.orthogonal_(torch.empty(m.weight.shape), generator=replay_gen)
                torch.testing.assert_close(m.weight, 0.8 * before[name][f"{mod_name}.weight"] + 0.2 * fresh)
                torch.testing.assert_close(m.bias, 0.8 * before[name][f"{mod_name}.bias"])
            elif isinstance(m, nn.LayerNorm):
                assert torch.equal(m.weight, before[name][f"{mod_name}.weight"])
    for k, v in agent.encoder.state_dict().items():
        assert torch.equal(v, enc_before[k])
    for opt in (agent.actor_opt, agent.critic_opt, agent.encoder_opt, agent.value_opt):
        assert len(opt.state) == 0
    agent.update(replay, 3)  # the optimisers start again from fresh Adam state
    assert len(agent.actor_opt.state) > 0


def test_perturbation_happens_on_interval_steps_only():
    agent = make_drm(perturb_interval=4)
    calls = []
    agent.perturb_networks = lambda: calls.append(1) or 0.5
    replay = FixedReplay(space())
    metrics = [agent.update(replay, s) for s in range(10)]
    assert len(calls) == 2 and [s for s, m in enumerate(metrics) if "perturb_factor" in m] == [4, 8]
    with pytest.raises(ConfigError, match="multiple"):
        make_drm(update_every_steps=2, perturb_interval=5)


# ------------------------------------------------------------------ schedules
def test_schedules_match_their_formulas():
    agent = make_drm(dormant_temp=10, target_dormant_ratio=0.2, target_lambda=0.6, lambda_temp=50,
                     min_perturb_factor=0.2, max_perturb_factor=0.9, perturb_rate=2)
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    for beta in (0.0, 0.1, 0.2, 0.35, 1.0):
        agent.dormant_ratio = beta
        assert agent.dormant_stddev == pytest.approx(sig(10 * (beta - 0.2)))
        assert agent.lambda_ == pytest.approx(0.6 / (1 + math.exp(50 * (beta - 0.2))))
        assert agent.perturb_factor == pytest.approx(min(max(0.2, 1 - 2 * beta), 0.9))
    agent.dormant_ratio = 0.2
    assert agent.dormant_stddev == pytest.approx(0.5) and agent.lambda_ == pytest.approx(0.3)
    agent.dormant_ratio = 0.0
    assert agent.perturb_factor == 0.9  # clipped at max
    agent.dormant_ratio = 0.5
    assert agent.perturb_factor == 0.2  # clipped at min
    # awaken exploration: sigma(beta) before the awaken step, then max(sigma(beta), schedule(step - awaken_step))
    agent.dormant_ratio, agent.awaken_step = 0.1, None
    assert agent.stddev(1000) == pytest.approx(sig(-1.0))
    agent.awaken_step = 1000
    assert agent.stddev(1000) == pytest.approx(1.0)  # schedule restarts at its start
    assert agent.stddev(1050) == pytest.approx(max(sig(-1.0), 0.55))
    assert agent.stddev(5000) == pytest.approx(sig(-1.0))  # schedule at 0.1 < sigma(-1) = 0.269
    assert make_drm(lambda_schedule="constant", target_lambda=0.5).lambda_ == 0.5
    assert make_drm(expectile_exploitation=False).lambda_ == 0.0


def test_awaken_step_is_the_first_update_after_exploration_below_target():
    agent = make_drm(num_expl_steps=3, target_dormant_ratio=1.01, perturb=False)  # every ratio is below target
    replay = FixedReplay(space())
    for step in range(6):
        agent.update(replay, step)
    assert agent.awaken_step == 4
    mw = make_drm(num_expl_steps=3, target_dormant_ratio=1.01, perturb=False, awaken_after_expl_steps=False)
    mw.update(replay, 0)  # drm_mw.py: awake at the first update below target, exploration steps or not
    assert mw.awaken_step == 0


def test_metaworld_critic_has_dropout_and_layernorm_and_learns():
    agent = make_drm(critic_dropout=0.01, perturb=False)
    head = agent.critic.Q1
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["Linear", "Dropout", "LayerNorm", "ReLU", "Linear", "Dropout", "LayerNorm", "ReLU", "Linear"]
    assert head[1].p == 0.01 and agent.critic_target.Q2[5].p == 0.01
    plain = [type(m).__name__ for m in make_drm(perturb=False).critic.Q1]
    assert plain == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]  # DrQ-v2's critic by default
    replay = FixedReplay(space())
    losses = [agent.update(replay, step)["critic_loss"] for step in range(3, 60)]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    with pytest.raises(CheckpointError, match="critic_dropout"):  # another architecture: refused on load
        make_drm(perturb=False).load_state_dict(_roundtrip(agent.state_dict()))
    with pytest.raises(ConfigError, match="critic_dropout=1.5"):
        make_drm(critic_dropout=1.5)


def test_value_network_expectile_loss():
    agent = make_drm(expectile=0.9)
    feats = torch.randn(B, agent.encoder.repr_dim)
    action = torch.rand(B, 2) * 2 - 1
    with torch.no_grad():
        q = torch.min(*agent.critic(feats, action))
        err = agent.value_net(feats) - q
        expected = torch.mean(torch.where(err > 0, 0.1, 0.9) * err**2)
    assert agent.update_value(feats, action)["value_loss"] == pytest.approx(expected.item(), rel=1e-6)


# ------------------------------------------------------------------ ablations
def _params(agent) -> list[torch.Tensor]:
    return [p.detach().clone() for m in (agent.encoder, agent.actor, agent.critic, agent.critic_target)
            for p in m.parameters()]


def test_all_flags_off_is_drqv2_bit_for_bit():
    torch.manual_seed(0)
    drq = DrQV2Agent(space(), ACTION, "cpu", **BASE)
    torch.manual_seed(0)
    drm = make_drm(**off())
    assert drm.value_net is None
    replay = FixedReplay(space())
    for step in range(9):  # crosses perturb_interval=4 twice
        m1, m2 = drq.update(replay, step), drm.update(replay, step)
        assert {k: m1[k] for k in ("critic_loss", "actor_loss", "actor_stddev")} == \
            {k: m2[k] for k in ("critic_loss", "actor_loss", "actor_stddev")}
    for a, b in zip(_params(drq), _params(drm), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("flag", FLAGS)
def test_each_flag_changes_only_its_part(flag):
    agent = make_drm(**off(**{flag: True}))
    calls = []
    original = agent.perturb_networks
    agent.perturb_networks = lambda: calls.append(1) or original()
    replay = FixedReplay(space())
    for step in range(6):
        agent.update(replay, step)
    agent.dormant_ratio = 0.5
    assert (len(calls) == 1) == (flag == "perturb")
    assert (agent.value_net is not None) == (flag == "expectile_exploitation")
    assert (agent.lambda_ > 0) == (flag == "expectile_exploitation")
    drq_stddev = schedule(BASE["stddev_schedule"], 50)
    assert (agent.stddev(50) != pytest.approx(drq_stddev)) == (flag == "awaken_exploration")


# ------------------------------------------------------------------ checkpoints and config
def test_state_dict_roundtrip_and_other_agent():
    replay = FixedReplay(space())
    a = make_drm(seed=1, num_expl_steps=0, target_dormant_ratio=1.01)
    for step in range(3):
        a.update(replay, step)
    assert a.awaken_step == 1
    state = _roundtrip(a.state_dict())
    assert state["agent"] == "drm" and set(state["drm"]) >= {"dormant_ratio", "awaken_step", "value_net", "value_opt"}
    b = make_drm(seed=9, num_expl_steps=0, target_dormant_ratio=1.01)
    b.load_state_dict(state)
    assert (b.dormant_ratio, b.awaken_step) == (a.dormant_ratio, a.awaken_step)
    for step in (3, 4):  # includes a perturbation (interval 4)
        assert a.update(replay, step) == b.update(replay, step)
    for pa, pb in zip(_params(a), _params(b), strict=True):
        assert torch.equal(pa, pb)
    drq = DrQV2Agent(space(), ACTION, "cpu", **BASE)
    with pytest.raises(CheckpointError, match="'drqv2'"):
        drq.load_state_dict(state)
    with pytest.raises(CheckpointError, match="'drm'"):
        make_drm().load_state_dict(drq.state_dict())
    with pytest.raises(CheckpointError, match="expectile_exploitation"):
        make_drm(expectile_exploitation=False).load_state_dict(state)


def test_a_resumed_drm_continues_bit_for_bit():
    """What the trainer's exact resume needs of DrM (the trainer saves and loads ``state_dict``): 10 act+update
    steps in one go == 5, a checkpoint round trip into an agent of another seed, then 5 more, a perturbation
    (interval 4, step 8) after the resume included; the metrics train.csv gets are the same too."""
    replay, obs = FixedReplay(space()), random_obs(space(), np.random.default_rng(3))

    def play(agent: DrMAgent, steps: range) -> list[dict]:
        metrics = []
        for step in steps:
            agent.act(obs, step, eval_mode=False)  # exploration noise draws from the agent's generator
            metrics.append(agent.update(replay, step))
        return metrics

    torch.manual_seed(0)  # initial weights come from the global generator (the trainer seeds it)
    full = make_drm(num_expl_steps=2, target_dormant_ratio=1.01)
    full_metrics = play(full, range(10))
    torch.manual_seed(0)
    split = make_drm(num_expl_steps=2, target_dormant_ratio=1.01)
    play(split, range(5))
    resumed = make_drm(num_expl_steps=2, target_dormant_ratio=1.01, seed=9)
    resumed.load_state_dict(_roundtrip(split.state_dict()))
    # exploration ends after step 2: awake from the next update on
    assert (resumed.dormant_ratio, resumed.awaken_step) == (split.dormant_ratio, 3)
    assert play(resumed, range(5, 10)) == full_metrics[5:]
    assert "perturb_factor" in full_metrics[8] and {"actor_dormant_ratio", "value_loss"} <= set(full_metrics[-1])
    a, b = full.state_dict(), resumed.state_dict()
    assert_same_tensors(a, b, min_count=40)  # every net, optimiser state, the value net and the generator
    assert (a["drm"]["dormant_ratio"], a["drm"]["awaken_step"]) == (b["drm"]["dormant_ratio"], b["drm"]["awaken_step"])


def test_make_agent_reads_drm_yaml_with_task_overrides(compose_cfg):
    root = compose_cfg("agent=drm", "env=dmc/cheetah_run", tiny=False)  # (the yaml's defaults list composed)
    root.agent.hidden_dim = 32
    plain = make_agent(root.agent, space(), ACTION, "cpu", env_name="dmc/cheetah_run")
    assert isinstance(plain, DrMAgent) and plain.dormant_threshold == 0.025 and plain.perturb_interval == 100_000
    assert (plain.min_perturb_factor, plain.max_perturb_factor, plain.perturb_rate) == (0.2, 1.0, 2.0)
    assert (plain.target_lambda, plain.lambda_temp, plain.expectile, plain.dormant_temp) == (0.6, 50, 0.9, 10)
    assert plain.perturb and plain.awaken_exploration and plain.expectile_exploitation
    dog = make_agent(root.agent, space(), ACTION, "cpu", env_name="dmc/dog_run")
    assert (dog.lr, dog.config["feature_dim"], dog.max_perturb_factor) == (pytest.approx(8e-5), 100, 0.6)
    assert make_agent(root.agent, space(), ACTION, "cpu", env_name="dmc/dog_trot").max_perturb_factor == 0.9
    mw = make_agent(root.agent, space(), ACTION, "cpu", env_name="metaworld/assembly")
    assert (mw.max_perturb_factor, mw.target_lambda, mw.lambda_schedule) == (0.95, 0.5, "constant")
    assert (mw.config["critic_dropout"], mw.awaken_after_expl_steps, mw.nstep, mw.discount) == (0.01, False, 10, 0.97)
    assert plain.config["critic_dropout"] == 0.0 and plain.awaken_after_expl_steps and plain.nstep == 3
    sweep = make_agent(root.agent, space(), ACTION, "cpu", env_name="metaworld/sweep-into")
    assert (sweep.max_perturb_factor, sweep.target_lambda) == (0.9, 0.6)
    obs = random_obs(space(), np.random.default_rng(0))
    assert plain.act(obs, 0, True).shape == (2,)


# ------------------------------------------------------------------ trainer
DRM_TINY = ["agent=drm", "agent.perturb_interval=60"]  # perturbs at steps 60, 120, 180 of the 200-step run


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # ~50 s; test_a_resumed_drm_continues_bit_for_bit holds DrM's part of it, test_trainer the trainer's
def test_trainer_smoke_and_exact_resume(compose_cfg, tmp_path):
    full = Trainer(compose_cfg(*DRM_TINY, "frames=400"), tmp_path / "full")
    full.train()
    rows = _rows(tmp_path / "full" / "train.csv")
    assert "actor_dormant_ratio" in rows[-1] and "value_loss" in rows[-1]
    assert any(r.get("perturb_factor") for r in rows)
    assert sorted(p.name for p in (tmp_path / "full" / "videos").glob("*.mp4"))
    Trainer(compose_cfg(*DRM_TINY, "frames=200"), tmp_path / "split").train()
    resumed = Trainer(compose_cfg(*DRM_TINY, "frames=400", "resume=true"), tmp_path / "split")
    assert resumed.step == 100
    resumed.train()
    a, b = full.agent.state_dict(), resumed.agent.state_dict()
    assert (a["drm"]["dormant_ratio"], a["drm"]["awaken_step"]) == (b["drm"]["dormant_ratio"], b["drm"]["awaken_step"])
    for name in ("encoder", "actor", "critic", "critic_target"):
        for k, v in a[name].items():
            assert torch.equal(v, b[name][k]), (name, k)
    for k, v in a["drm"]["value_net"].items():
        assert torch.equal(v, b["drm"]["value_net"][k]), k
    assert torch.equal(a["generator"], b["generator"])
    perturbed = [int(r["frame"]) for r in _rows(tmp_path / "split" / "train.csv") if r.get("perturb_factor")]
    assert any(f > 200 for f in perturbed), perturbed  # a perturbation happened after the resume
