"""bench/ee_joint_limits.py: its two cases do what they say (no clip in free motion, every command cut at the
limit, the baseline never held), on a few commands."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("case", ["free", "at_limit"])
def test_the_bench_cases_clip_where_they_say(monkeypatch: pytest.MonkeyPatch, case: str) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import ee_joint_limits

    for with_pose in (True, False):
        layer = ee_joint_limits.layer_for(case, with_pose)
        with layer:
            times = ee_joint_limits.time_block(layer, case, 30)
            clipped = sum(e["kind"] == "joint_limit" for e in layer.events)
        assert len(times) == 30 and all(t > 0 for t in times)
        cut_short = case == "at_limit" and with_pose
        assert clipped >= 25 if cut_short else clipped == 0, (with_pose, clipped)
