"""reuse_freed_memory: large blocks freed and allocated again every update are not page-faulted in again (glibc)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from robotrl.errors import ConfigError
from robotrl.malloc import reuse_freed_memory

# An "update" allocates two 64 MB tensors and frees them (above glibc's largest mmap threshold, 32 MB, so by default
# each is mmapped and unmapped every time). Prints, over the last 10 of 20 updates, the minor page faults per 4 KB page
# allocated and the growth of the resident size in MB. (torch, not numpy: numpy asks for transparent huge pages,
# which hide the faults this is about.)
PROBE = """
import resource, sys
import torch
from robotrl.malloc import reuse_freed_memory
print(reuse_freed_memory(sys.argv[1] == "on"), file=sys.stderr)
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
resident_mb = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
for i in range(20):
    if i == 10:
        before, rss = faults(), resident_mb()
    a = torch.ones(64 << 20, dtype=torch.uint8)
    b = a * 2
    del a, b
print((faults() - before) / (10 * 2 * (64 << 20) // 4096), resident_mb() - rss)
"""


def faults_and_growth(setting: str) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", PROBE, setting], capture_output=True, text=True, check=True)
    faults, growth = map(float, out.stdout.split())
    return faults, growth


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_blocks_freed_each_update_are_reused_without_faults_or_growth():
    faults, _ = faults_and_growth("off")
    assert faults > 0.5  # glibc's default: unmapped on free, every page faulted in again in every update
    faults, growth_mb = faults_and_growth("on")
    assert faults < 0.05
    assert growth_mb < 10  # the blocks are reused, not leaked: the resident size is steady


def test_off_leaves_malloc_alone_and_says_so():
    assert reuse_freed_memory(False) == "glibc's default (reuse_freed_memory=false)"


def test_the_setting_must_be_a_bool(compose_cfg):
    from robotrl.config import validate_config

    with pytest.raises(ConfigError, match=r"reuse_freed_memory.*'yes'"):
        validate_config(compose_cfg("reuse_freed_memory=yes"))
