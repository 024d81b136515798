"""reuse_freed_memory: large blocks freed and allocated again every update are not page-faulted in again (glibc)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from robotrl.errors import ConfigError
from robotrl.malloc import reuse_freed_memory

# An "update" allocates two 64 MB tensors and frees them (above glibc's largest mmap threshold, 32 MB, so by default
# each is mmapped and unmapped every time). Prints, over the last 10 of 50 updates, the minor page faults per 4 KB page
# allocated and the growth of the resident size in MB. 40 updates of warm-up: with the blocks in the heap, small
# allocations (each tensor's C++ objects) land in freed gaps, so the heap grows in 64-128 MB steps until it has room
# for every placement; the last step came at update 1-16 in ~80 runs here, and CI once saw one after a 10-update
# warm-up. (torch, not numpy: numpy asks for transparent huge pages, which hide the faults this is about.)
PROBE = """
import resource, sys
import torch
from robotrl.malloc import reuse_freed_memory
print(reuse_freed_memory(sys.argv[1] == "on"), file=sys.stderr)
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
resident_mb = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
for i in range(50):
    if i == 40:
        before, rss = faults(), resident_mb()
    a = torch.ones(64 << 20, dtype=torch.uint8)
    b = a * 2
    del a, b
print((faults() - before) / (10 * 2 * (64 << 20) // 4096), resident_mb() - rss)
"""


def run_fresh(code: str, setting: str) -> str:
    """stdout of ``code`` in a fresh interpreter (the setting is process-wide), ``setting`` ("on"/"off") its argv."""
    return subprocess.run([sys.executable, "-c", code, setting], capture_output=True, text=True, check=True).stdout


def faults_and_growth(setting: str) -> tuple[float, float]:
    faults, growth = map(float, run_fresh(PROBE, setting).split())
    return faults, growth


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_blocks_freed_each_update_are_reused_without_faults_or_growth():
    faults, _ = faults_and_growth("off")
    assert faults > 0.5  # glibc's default: unmapped on free, every page faulted in again in every update
    faults, growth_mb = faults_and_growth("on")
    assert faults < 0.05
    assert growth_mb < 10  # the blocks are reused, not leaked: the resident size is steady


def test_off_leaves_malloc_alone_and_says_so():
    assert reuse_freed_memory(False) == "the C library's default (reuse_freed_memory=false)"


def test_the_setting_must_be_a_bool(compose_cfg):
    from robotrl.config import validate_config

    with pytest.raises(ConfigError, match=r"reuse_freed_memory.*'yes'"):
        validate_config(compose_cfg("reuse_freed_memory=yes"))


# Two MR.Q pixel updates (84x84, batch 64: the encoder step's activations are ~80 MB blocks, mmapped by default) from
# the same seed; prints a digest of every parameter after them.
SAME_NUMBERS = """
import hashlib, sys
import gymnasium as gym, numpy as np, torch
from robotrl.malloc import reuse_freed_memory
reuse_freed_memory(sys.argv[1] == "on")
torch.set_num_threads(1)
torch.manual_seed(0)
from robotrl.agents.mrq import MRQAgent
from robotrl.replay import ReplayBuffer
space = gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (9, 84, 84), np.uint8)})
agent = MRQAgent(space, gym.spaces.Box(-1, 1, (2,), np.float32), "cpu", num_expl_steps=0, batch_size=64,
                 target_update_freq=1, dormant_every=0, seed=0)
replay = ReplayBuffer(1000, space, 2, 3, nstep=3, seed=0, check_stack=False)
rng = np.random.default_rng(0)
replay.add_first({"pixels": rng.integers(0, 256, (9, 84, 84), dtype=np.uint8)})
for t in range(100):
    replay.add(rng.uniform(-1, 1, 2).astype(np.float32), float(rng.normal()),
               {"pixels": rng.integers(0, 256, (9, 84, 84), dtype=np.uint8)}, False, t == 99)
for step in range(2):
    agent.update(replay, step)
digest = hashlib.sha256()
for module in (agent.encoder, agent.policy, agent.value):
    for p in module.parameters():
        digest.update(p.detach().numpy().tobytes())
print(digest.hexdigest())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_updates_give_the_same_numbers_either_way():
    """Only where blocks live changes (torch aligns every block to 64 bytes either way), so a run resumed across the
    setting continues exactly."""
    digests = {run_fresh(SAME_NUMBERS, setting) for setting in ("off", "on")}
    assert len(digests) == 1, digests
