"""The dormant-ratio diagnostic for TD-MPC2 / MoDem(-V2) (policy priors and Q ensemble) and SB3 SAC/PPO."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from robotrl.agents.dormant import layers_dormant_ratio, stats_from_scores
from robotrl.agents.sb3_dormant import measured_layers
from robotrl.agents.tdmpc2 import TDMPC2Agent
from torch import nn

from robotrl.workflows.train import Trainer
from tests.conftest import assert_same_tensors
from tests.test_sb3 import AGENTS, SB3_TINY
from tests.test_tdmpc2 import TINY, TINY_CFG, _batch, _spaces


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_stats_from_scores_normalises_each_ensemble_member_on_its_own():
    # member 0: neuron 2 at 1.3% of its layer's mean -> dormant; member 1: all equal, at another scale.
    scores = torch.tensor([[1.0, 1.0, 0.01, 1.0], [500.0, 500.0, 500.0, 500.0]])
    stats = stats_from_scores([("layer0", scores)], tau=0.025)
    assert (stats.dormant, stats.total, stats.per_layer["layer0"]) == (1, 8, 1 / 8)
    with pytest.raises(ValueError, match="did not run"):
        layers_dormant_ratio([("a", nn.Linear(2, 2)), ("b", nn.Linear(2, 2))], lambda: None)


@pytest.mark.parametrize("num_pi", [1, 3])
def test_tdmpc2_dormant_ratio_counts_silenced_neurons_of_prior_and_q_members(num_pi):
    obs_space, act_space = _spaces("state")
    agent = TDMPC2Agent(obs_space, act_space, "cpu", **{**TINY, "num_pi": num_pi})
    z = agent.model.encode({"state": torch.randn(64, 5)})
    actor, critic = agent.dormant_stats(z)
    assert actor.ratio == 0.0  # a fresh LayerNorm + Mish net has no dormant neuron
    # TD-MPC2 zero-initialises the Q output layer: all-zero logits are fully dormant under the paper's `<=`
    assert critic.per_layer == {"layer0": 0.0, "layer1": 0.0, "layer2": 1.0}
    base = critic.dormant
    mlp_dim, num_q = agent.arch["mlp_dim"], agent.arch["num_q"]
    prefix = "0." if num_pi > 1 else ""
    assert set(actor.per_layer) == {f"{k}.{i}" if num_pi > 1 else str(i) for k in range(num_pi) for i in range(3)}
    with torch.no_grad():  # silence 5 neurons of prior 0's layer 0, 3 of the last Q member's layer 1: Mish(0) = 0
        agent.model._pi[0].ln.weight[:5] = 0
        agent.model._pi[0].ln.bias[:5] = 0
        agent.model._Qs.ln_weight_1[-1, :3] = 0
        agent.model._Qs.ln_bias_1[-1, :3] = 0
    actor, critic = agent.dormant_stats(z)
    assert actor.per_layer[f"{prefix}0"] == 5 / mlp_dim and actor.dormant == 5
    assert critic.per_layer["layer1"] == 3 / (num_q * mlp_dim) and critic.dormant == base + 3
    assert critic.total == num_q * (2 * mlp_dim + agent.arch["num_bins"])


def test_tdmpc2_diagnostic_changes_nothing_in_training_and_logs_every_k_updates():
    obs_space, act_space = _spaces("state")
    batch = _batch(obs_space, 3, 16, 2)
    agents, metrics = {}, {}
    for every in (2, 0):  # init and dropout draw from torch's global generator: seed it the same for both
        torch.manual_seed(0)
        agents[every] = TDMPC2Agent(obs_space, act_space, "cpu", **{**TINY, "dormant_every": every})
        metrics[every] = [agents[every].update_from(batch) for _ in range(4)]
    assert not any("actor_dormant_ratio" in m for m in metrics[0])
    on, off, metrics = agents[2], agents[0], metrics[2]
    assert ["critic_dormant_ratio" in m for m in metrics] == [True, False, True, False]
    assert "actor_dormant_ratio/0" in metrics[0] and "critic_dormant_ratio/layer2" in metrics[0]
    assert_same_tensors(on.state_dict(), off.state_dict(), min_count=20)  # same parameters and generator


def test_tdmpc2_dormant_columns_reach_train_csv_and_plot(tmp_path):
    """TD-MPC2's update metrics with ``dormant_every=1`` as the run logs them (``train_row`` -> the run's Logger),
    then `robotrl plot` of a dormant column."""
    from robotrl.cli import main
    from robotrl.logger import Logger
    from robotrl.workflows.trainer.stats import EpisodeStats, train_row

    obs_space, act_space = _spaces("state")
    agent = TDMPC2Agent(obs_space, act_space, "cpu", **{**TINY, "dormant_every": 1})
    batch = _batch(obs_space, 3, 16, 2)
    (tmp_path / "run").mkdir()
    logger = Logger(tmp_path / "run", use_tb=False)
    for episode in range(1, 4):
        stats = EpisodeStats(updates=[agent.update_from(batch) for _ in range(2)])
        base = {"step": 50 * episode, "episode": episode, "episode_return": 1.0, "episode_length": 50, "fps": 1.0,
                "elapsed": float(episode)}  # the columns Run.log_train_episode gives every row
        logger.log("train", 100 * episode, train_row(stats, base, None, False, f"episode {episode}"))
    logger.close()
    rows = [r for r in _rows(tmp_path / "run" / "train.csv") if r.get("actor_dormant_ratio")]
    assert len(rows) == 3 and all(0.0 <= float(r["critic_dormant_ratio"]) <= 1.0 for r in rows)
    with pytest.raises(SystemExit) as e:
        main(["plot", str(tmp_path / "run"), "--source", "train", "--metric", "critic_dormant_ratio",
              "--out", str(tmp_path / "d.png"), "--reps", "0"])
    assert e.value.code == 0
    assert (tmp_path / "d.png").stat().st_size > 0


@pytest.mark.slow  # a trainer run (~5 s); test_tdmpc2_dormant_columns_reach_train_csv_and_plot holds it
def test_tdmpc2_train_csv_has_dormant_columns_and_plots(compose_cfg, tmp_path):
    from robotrl.cli import main

    cfg = compose_cfg(*TINY_CFG, "env.obs_type=state", "agent.dormant_every=1", "save_video=false", tiny=False)
    Trainer(cfg, tmp_path / "run").train()
    rows = [r for r in _rows(tmp_path / "run" / "train.csv") if r.get("actor_dormant_ratio")]
    assert rows and all(0.0 <= float(r["critic_dormant_ratio"]) <= 1.0 for r in rows)
    with pytest.raises(SystemExit) as e:
        main(["plot", str(tmp_path / "run"), "--source", "train", "--metric", "critic_dormant_ratio",
              "--out", str(tmp_path / "d.png"), "--reps", "0"])
    assert e.value.code == 0
    assert (tmp_path / "d.png").stat().st_size > 0


def test_sb3_layers_are_measured_after_their_activation():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    layers = measured_layers({"q": net})
    assert [(n, type(m).__name__) for n, m in layers] == [("q.0", "ReLU"), ("q.2", "Linear")]
    with torch.no_grad():
        net[0].bias[:2] = -100.0  # two hidden units always negative: ReLU output 0 (pre-activation is not small)
    stats = layers_dormant_ratio(layers, lambda: net(torch.randn(32, 3)))
    assert stats.per_layer["q.0"] == 0.5


SB3_SHORT = {"sb3_sac": ["seed_frames=20", "env.max_episode_steps=40"],  # learning from step 10 of 40
             "sb3_ppo": ["env.max_episode_steps=40", "agent.n_steps=16", "agent.batch_size=16"]}  # 2 train()s


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_sb3_episode_stats_have_actor_and_critic_dormant_ratio(compose_cfg, agent):
    """SB3's loop as the trainer runs it (tests.test_sb3.sb3_episodes): the dormant callback's values reach each
    episode's update metrics, which become its train.csv row (``train_row``)."""
    from robotrl.workflows.trainer.stats import train_row
    from tests.test_sb3 import sb3_episodes

    cfg = compose_cfg(*SB3_TINY, *AGENTS[agent], *SB3_SHORT[agent], "agent.dormant_every=1", tiny=False)
    _, episodes, _ = sb3_episodes(cfg, 2)
    rows = [row for row in (train_row(s, {}, None, False, "") for s in episodes) if "actor_dormant_ratio" in row]
    assert rows, f"{agent} logged no dormant ratio"
    header = set().union(*rows)
    for key in ("actor_dormant_ratio", "critic_dormant_ratio"):
        assert all(0.0 <= r[key] <= 1.0 for r in rows)
        assert any(k.startswith(key + "/") for k in header), (key, sorted(header))
    if agent == "sb3_sac":  # both Q nets of the critic, after their ReLUs
        assert {"critic_dormant_ratio/critic.qf0.0", "critic_dormant_ratio/critic.qf1.4"} <= header


def test_sb3_diagnostic_leaves_sb3s_loop_unchanged(compose_cfg):
    """SAC with the diagnostic on every train() vs off, through SB3's loop as the trainer runs it: bit-identical
    parameters (no global RNG is touched)."""
    from tests.test_sb3 import sb3_episodes

    runs, stats = {}, {}
    for every in (1, 0):
        cfg = compose_cfg(*SB3_TINY, *AGENTS["sb3_sac"], *SB3_SHORT["sb3_sac"], f"agent.dormant_every={every}",
                          tiny=False)
        parts, stats[every], _ = sb3_episodes(cfg, 2)
        runs[every] = parts.agent.state_dict()
    assert_same_tensors(runs[1], runs[0], min_count=5)
    assert np.isfinite(stats[1][-1].updates[-1]["actor_dormant_ratio"])


@pytest.mark.slow  # trainer runs (~9 s); test_sb3_episode_stats_have_actor_and_critic_dormant_ratio holds them
@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_sb3_train_csv_has_actor_and_critic_dormant_ratio(compose_cfg, tmp_path, agent):
    cfg = compose_cfg(*SB3_TINY, *AGENTS[agent], "agent.dormant_every=1", tiny=False)
    Trainer(cfg, tmp_path).train()
    rows = [r for r in _rows(tmp_path / "train.csv") if r.get("actor_dormant_ratio")]
    assert rows, f"{agent} logged no dormant ratio"
    header = rows[0].keys()
    for key in ("actor_dormant_ratio", "critic_dormant_ratio"):
        assert all(0.0 <= float(r[key]) <= 1.0 for r in rows)
        assert any(k.startswith(key + "/") for k in header), (key, sorted(header))
    if agent == "sb3_sac":  # both Q nets of the critic, after their ReLUs
        assert {"critic_dormant_ratio/critic.qf0.0", "critic_dormant_ratio/critic.qf1.4"} <= set(header)


@pytest.mark.slow  # two trainer runs (~4 s); test_sb3_diagnostic_leaves_sb3s_loop_unchanged holds them
def test_sb3_diagnostic_leaves_training_unchanged(compose_cfg, tmp_path):
    """SAC with the diagnostic on every train() vs off: bit-identical parameters (no global RNG is touched)."""
    runs = {}
    for every in (1, 0):
        trainer = Trainer(compose_cfg(*SB3_TINY, *AGENTS["sb3_sac"], "frames=300", "eval_episodes=0",
                                      f"agent.dormant_every={every}", tiny=False), tmp_path / str(every))
        trainer.train()
        runs[every] = trainer.agent.state_dict()
    assert_same_tensors(runs[1], runs[0], min_count=5)
    assert np.isfinite(float(_rows(tmp_path / "1" / "train.csv")[-1]["actor_dormant_ratio"]))
