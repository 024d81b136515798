"""`robotrl report`: run discovery, IQM + bootstrap CI over seeds (checked against hand-computed numbers), outputs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from robotrl.errors import ConfigError
from robotrl.workflows.report import find_runs, iqm_ci, read_run, write_report


def make_run(run_dir: Path, env: str, agent: str, seed: int, final_return: float, success: float | None = None,
             frames: int = 1000, elapsed_s: float = 120.0, complete: bool = True, reward: str = "env") -> Path:
    """A run dir as `robotrl train` writes it: run.json, eval.csv (two evaluations) and, when complete, summary.json."""
    run_dir.mkdir(parents=True)
    config = {"seed": seed, "env": {"name": env}, "agent": {"name": agent}, "reward": {"name": reward}}
    (run_dir / "run.json").write_text(json.dumps({"config": config}))
    fields = ["frame", "step", "episode_return", "elapsed"] + (["success"] if success is not None else [])
    with open(run_dir / "eval.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        for frame, ret, t, succ in ((0, 0.0, 0.0, 0.0), (frames, final_return, elapsed_s, success)):
            writer.writerow({"frame": frame, "step": frame // 2, "episode_return": ret, "elapsed": t,
                             **({"success": succ} if success is not None else {})})
    if complete:
        final = {"return_mean": final_return, "success_rate": success}
        (run_dir / "summary.json").write_text(json.dumps({"frames": frames, "elapsed_s": elapsed_s,
                                                          "final_eval": final}))
    return run_dir


@pytest.fixture
def sweep(tmp_path):
    """A multirun dir: two tasks, two agents, 4 and 5 seeds, one Meta-World task with success, one run unfinished."""
    root = tmp_path / "runs"
    for seed, ret, succ in zip((1, 2, 3, 4), (0.0, 10.0, 20.0, 100.0), (0.0, 0.5, 0.5, 1.0), strict=True):
        make_run(root / "metaworld/reach/drqv2" / f"seed{seed}", "metaworld/reach", "drqv2", seed, ret, succ,
                 frames=1000 + seed, elapsed_s=60.0 * seed)
    for seed, ret in zip((1, 2, 3, 4, 5), (1.0, 2.0, 3.0, 4.0, 100.0), strict=True):
        make_run(root / "dmc/walker_walk/drm" / f"seed{seed}", "dmc/walker_walk", "drm", seed, ret,
                 complete=seed != 5)
    make_run(root / ".submitit/123/seed9", "dmc/walker_walk", "drm", 9, 1e6)  # hidden: not a run of the sweep
    return root


def test_iqm_matches_hand_computed_values():
    # IQM = mean of the middle half: [0, 10, 20, 100] -> (10 + 20) / 2; [1, 2, 3, 4, 100] trims one each side -> 3
    assert iqm_ci([100.0, 0.0, 20.0, 10.0], reps=0)[0] == pytest.approx(15.0)
    assert iqm_ci([1.0, 2.0, 3.0, 4.0, 100.0], reps=0)[0] == pytest.approx(3.0)
    point, low, high = iqm_ci([7.0, 7.0, 7.0], reps=200)
    assert (point, low, high) == pytest.approx((7.0, 7.0, 7.0))
    assert np.isnan(iqm_ci([5.0], reps=200)[1])  # one seed: no CI, not a fake zero-width one


def test_bootstrap_ci_matches_a_plain_percentile_bootstrap():
    from scipy.stats import trim_mean

    values = np.array([3.0, 8.0, 1.0, 9.0, 4.0, 12.0, 6.0, 2.0, 30.0, 5.0])
    _, low, high = iqm_ci(values, reps=2000, seed=1)
    rng = np.random.default_rng(0)
    boot = trim_mean(values[rng.integers(0, len(values), (20000, len(values)))], 0.25, axis=1)
    ref_low, ref_high = np.percentile(boot, [2.5, 97.5])
    # IQMs of 10 values move in steps of 1/6; the mean's CI ([4, 13.5] here, pulled up by the 30) is far outside
    assert low == pytest.approx(ref_low, abs=0.75) and high == pytest.approx(ref_high, abs=0.75)
    assert low < high


def test_bootstrap_cis_are_reproducible_and_leave_numpys_global_rng_alone():
    # rliable's StratifiedBootstrap draws from np.random's global state, not the random_state it is given: the same
    # call gave [41.3, 148.6] then [40.7, 146.3], so published CIs could not be regenerated
    from robotrl.workflows.plot import iqm_with_ci

    values = np.array([8.7, 20.0, 30.0, 64.0, 70.0, 90.0, 100.0, 150.0, 200.0, 210.6])
    np.random.seed(123)
    state = np.random.get_state()
    first = iqm_ci(values, reps=300, seed=3)
    assert iqm_ci(values, reps=300, seed=3) == first
    assert iqm_ci(values, reps=300, seed=4) != first  # the seed is used
    curves = np.stack([values, values[::-1]], axis=1)  # runs x frames
    assert np.array_equal(iqm_with_ci(curves, reps=300)[1], iqm_with_ci(curves, reps=300)[1])
    after = np.random.get_state()
    assert after[0] == state[0] and np.array_equal(after[1], state[1]) and after[2:] == state[2:]


def test_find_runs_skips_hidden_dirs_and_accepts_run_dirs(sweep):
    runs = find_runs([sweep])
    assert len(runs) == 9 and not any(".submitit" in str(r) for r in runs)
    one = sweep / "dmc/walker_walk/drm/seed1"
    assert find_runs([one]) == [one]
    with pytest.raises(ConfigError, match="is not a directory"):
        find_runs([sweep.parent / "missing"])


def test_unfinished_run_is_read_from_eval_csv(sweep):
    result = read_run(sweep / "dmc/walker_walk/drm/seed5")
    assert not result.complete and result.final_return == 100.0 and result.frames == 1000


def test_report_tables_and_files(sweep, tmp_path):
    report = write_report([sweep], tmp_path / "out", reps=500)
    groups = {(g["env"], g["agent"]): g for g in report["groups"]}
    reach = groups[("metaworld/reach", "drqv2")]
    assert reach["return"]["iqm"] == pytest.approx(15.0)
    assert reach["success"]["iqm"] == pytest.approx(0.5)
    assert 0.0 <= reach["return"]["ci_low"] <= 15.0 <= reach["return"]["ci_high"] <= 100.0
    assert reach["frames"] == {"median": 1002.5, "min": 1001, "max": 1004}
    assert reach["wall_clock_min"]["median"] == pytest.approx(2.5)  # 60 s x seeds 1..4 -> median 150 s
    walker = groups[("dmc/walker_walk", "drm")]
    assert walker["return"]["iqm"] == pytest.approx(3.0) and walker["success"] is None
    assert walker["incomplete"] == 1 and walker["seeds"] == [1, 2, 3, 4, 5]
    text = (tmp_path / "out/report.md").read_text()
    assert "## metaworld/reach" in text and "## dmc/walker_walk" in text
    assert "| drqv2 | 1, 2, 3, 4 | 15 [" in text and "(1 incomplete)" in text
    for name in ("final.png", "curves_metaworld-reach.png", "curves_dmc-walker_walk.png", "report.json"):
        assert (tmp_path / "out" / name).stat().st_size > 0


def test_cli_report_errors_are_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "robotrl.cli", "report", str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("robotrl: error: no runs under"), proc.stderr


def _multirun_yaml(root: Path, *task: str) -> None:
    """The part of Hydra's multirun.yaml that names the sweep's points (what `robotrl train -m` writes)."""
    overrides = {"hydra": ["hydra.mode=MULTIRUN"], "task": list(task)}
    (root / "multirun.yaml").write_text(json.dumps({"hydra": {"overrides": overrides}}))  # JSON is YAML


def test_report_names_the_sweep_points_without_a_result(sweep, tmp_path):
    """multirun.yaml asked for seeds 1-7 of walker/drm: 1-5 have results, 6 has a run dir but no evaluation yet,
    7 never started. Both are named (report.json, report.md); they used to vanish from the report unmentioned."""
    make_run(sweep / "dmc/walker_walk/drm/seed6", "dmc/walker_walk", "drm", 6, 0.0, complete=False)
    (sweep / "dmc/walker_walk/drm/seed6/eval.csv").unlink()
    _multirun_yaml(sweep, "env=dmc/walker_walk", "agent=drm", "seed=1,2,3,4,5,6,7")
    report = write_report([sweep], tmp_path / "out", reps=0)
    missing = {m["overrides"]: m for m in report["missing"]}
    assert sorted(missing) == ["seed=6", "seed=7"]
    assert missing["seed=6"]["state"] == "no evaluation yet" and missing["seed=7"]["state"] == "no run dir"
    assert missing["seed=7"]["run_dir"] == str(sweep / "dmc/walker_walk/drm/seed7")
    text = (tmp_path / "out/report.md").read_text()
    assert "## Missing sweep points (2)" in text and "`seed=7`: no run dir" in text


def test_final_eval_comes_from_eval_csv_when_the_summary_lacks_it(tmp_path):
    """A summary.json with final_eval null (what resume=true used to write over a finished run) is not the end of
    the run's result: eval.csv holds the final evaluation."""
    run = make_run(tmp_path / "runs/dmc/walker_walk/drqv2/seed1", "dmc/walker_walk", "drqv2", 1, 42.0, frames=1000)
    (run / "summary.json").write_text(json.dumps({"frames": 1000, "elapsed_s": 3.0, "final_eval": None}))
    result = read_run(run)
    assert result is not None and result.final_return == 42.0 and result.frames == 1000 and result.complete


def test_cli_report_takes_out_and_lists_seeds_in_numeric_order(tmp_path, capsys):
    from robotrl.cli import run

    root = tmp_path / "runs"
    for seed in (10, 2, 1):
        make_run(root / "dmc/walker_walk/drqv2" / f"seed{seed}", "dmc/walker_walk", "drqv2", seed, float(seed))
    assert run("report", [str(root), f"out={tmp_path / 'elsewhere'}", "reps=0"]) == 0
    data = json.loads((tmp_path / "elsewhere/report.json").read_text())
    assert data["groups"][0]["seeds"] == [1, 2, 10] and [r["seed"] for r in data["runs"]] == [1, 2, 10]
    assert "| drqv2 | 1, 2, 10 |" in (tmp_path / "elsewhere/report.md").read_text()
    assert not (root / "report").exists() and "seeds 1, 2, 10" in capsys.readouterr().out
