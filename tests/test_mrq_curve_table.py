"""bench/mrq_curve_table.py: the reference's results format, frames vs agent steps, trivial rows, clear errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# the reference's layout (results/dmc_results.txt): dashes, "Env:", a header, tab-separated rows
REF = """--------------------
Env: Dmc-cartpole-swingup
Timestep\tSeed 0\t\tSeed 1\t\tSeed 2\t\tSeed 3
0\t\t10.0\t\t20.0\t\t30.0\t\t40.0
5000\t\t100.0\t\t200.0\t\t300.0\t\t400.0
10000\t\t1.0\t\t2.0\t\t3.0\t\t1000.0
--------------------
Env: Dmc-walker-walk
Timestep\tSeed 0\t\tSeed 1\t\tSeed 2\t\tSeed 3
0\t\t1.0\t\t2.0\t\t3.0\t\t4.0
"""


@pytest.fixture
def table_mod(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import mrq_curve_table
    return mrq_curve_table


def make_run(root: Path, returns: dict[int, float], random: float | None = None, constant: float = 0.0) -> Path:
    root.mkdir(parents=True)
    lines = ["frame,step,episode,episode_return,elapsed"] + [f"{f},{f // 2},0,{r},1.0" for f, r in returns.items()]
    (root / "eval.csv").write_text("\n".join(lines) + "\n")
    if random is not None:
        baselines = {"random": {"return_mean": random}, "constant": {"value": -0.5, "return_mean": constant}}
        (root / "summary.json").write_text(json.dumps({"baselines": baselines}))
    return root


def run_main(table_mod, monkeypatch, capsys, *args: str) -> tuple[str, dict[str, list[str]]]:
    """``mrq_curve_table.py *args`` -> (header line, first cell -> the cells of its row)."""
    monkeypatch.setattr(sys, "argv", ["mrq_curve_table.py", *args])
    table_mod.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].count("|") == lines[0].count("|")
    return lines[0], {line.split(" | ")[0].strip("| "): [c.strip() for c in line.strip("|").split("|")]
                      for line in lines[2:]}


def test_parse_results_reads_the_reference_layout(table_mod):
    results = table_mod.parse_results(REF)
    steps, scores = results["Dmc-cartpole-swingup"]
    assert steps.tolist() == [0, 5000, 10000]
    assert scores.shape == (3, 4) and scores[2, 3] == 1000.0
    assert results["Dmc-walker-walk"][1].shape == (1, 4)


def test_parse_results_refuses_ragged_rows(table_mod):
    with pytest.raises(ValueError, match="Dmc-cartpole-swingup: rows with \\[3, 4\\] seeds"):
        table_mod.parse_results(REF.replace("0\t\t10.0\t\t20.0\t\t30.0\t\t40.0", "0\t\t10.0\t\t20.0\t\t30.0"))


def test_table_maps_frames_to_reference_steps_and_adds_trivial_rows(table_mod, tmp_path):
    runs = [make_run(tmp_path / f"seed{i}", {0: 5.0 * i, 10000: 100.0 * i, 30000: 7.0}, random=20.0 + i,
                     constant=150.0) for i in (1, 2, 3)]
    ours = table_mod.our_returns(runs)
    steps, scores = table_mod.parse_results(REF)["Dmc-cartpole-swingup"]
    text = table_mod.table(ours, steps, scores, 2, table_mod.trivial(runs), reps=50)
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()[2:]}
    # frame 10,000 is agent step 5,000: the reference's row (IQM of 100..400 = mean of the middle two = 250)
    assert "| 10,000 | 5,000 | 200.0 [" in rows["10,000"] and "| 250.0 [" in rows["10,000"]
    assert "100.0-400.0" in rows["10,000"]
    # IQM trims the outlier seed: reference at step 10,000 is 1, 2, 3, 1000 -> 2.5
    steps_10k = table_mod.table({20000: [1.0, 2.0]}, steps, scores, 2, None, reps=50)
    assert "| 2.5 [" in steps_10k
    # a frame the reference never evaluated gets no reference number
    assert rows["30,000"].endswith("| - | - |")
    assert "uniform random, same eval seeds" in text and "best constant (-0.5)" in text
    cells = [c.strip() for c in rows["uniform random, same eval seeds"].strip("|").split("|")]
    assert np.isclose(float(cells[2].split()[0]), 22.0) and cells[3] == "21.0, 22.0, 23.0"


def test_trivial_rows_need_every_runs_summary(table_mod, tmp_path):
    runs = [make_run(tmp_path / "a", {0: 1.0}, random=1.0), make_run(tmp_path / "b", {0: 1.0})]
    assert table_mod.trivial(runs) is None


def test_a_run_stopped_before_its_end_gets_the_baselines_the_trainer_would_have_written(table_mod, tmp_path,
                                                                                         compose_cfg):
    """A run killed before its last frame has no summary.json; its trivial rows are played from its run.json with
    the trainer's own env, eval seeds and seed, so they equal what the trainer writes at the end."""
    from types import SimpleNamespace

    from omegaconf import OmegaConf
    from rich.console import Console

    from robotrl.workflows.trainer.evaluation import compare_with_baselines

    cfg = compose_cfg("compare_baselines=true", "eval_episodes=2", "seed=3")
    run = SimpleNamespace(cfg=cfg, state=SimpleNamespace(first_eval=None, last_eval=None), robot=None, frame=0,
                          console=Console(file=None, quiet=True))
    at_the_end = compare_with_baselines(run)["baselines"]
    stopped = make_run(tmp_path / "seed3", {0: 1.0})
    (stopped / "run.json").write_text(json.dumps({"config": OmegaConf.to_container(cfg, resolve=True)}))
    assert table_mod.run_baselines(stopped) == json.loads(json.dumps(at_the_end))
    finished = make_run(tmp_path / "seed1", {0: 1.0}, random=20.0, constant=150.0)
    rows = table_mod.trivial([finished, stopped])
    assert rows["uniform random"] == [20.0, at_the_end["random"]["return_mean"]]


def test_our_returns_keeps_frames_every_run_reached(table_mod, tmp_path):
    runs = [make_run(tmp_path / "a", {0: 1.0, 10000: 2.0, 20000: 3.0}), make_run(tmp_path / "b", {0: 4.0, 10000: 5.0})]
    assert table_mod.our_returns(runs) == {0: [1.0, 4.0], 10000: [2.0, 5.0]}


def test_all_frames_keeps_every_frame_over_the_runs_that_reached_it(table_mod, tmp_path):
    runs = [make_run(tmp_path / "a", {0: 1.0, 10000: 2.0, 20000: 3.0}), make_run(tmp_path / "b", {0: 4.0, 10000: 5.0})]
    ours = table_mod.our_returns(runs, all_frames=True)
    assert ours == {0: [1.0, 4.0], 10000: [2.0, 5.0], 20000: [3.0]}
    steps, scores = table_mod.parse_results(REF)["Dmc-cartpole-swingup"]
    rows = table_mod.table(ours, steps, scores, 2, None, reps=20).splitlines()
    assert "2 seeds" in rows[0] and "| 3.0 | 3.0 (1 of 2 seeds) |" in rows[4] and "of 2 seeds" not in rows[3]
    table_mod.plot(ours, steps, scores, 2, None, "t", tmp_path / "c.png")  # ragged rows plot too
    assert (tmp_path / "c.png").stat().st_size > 0


def test_unknown_env_is_one_clear_error(table_mod, tmp_path, monkeypatch):
    ref = tmp_path / "dmc_results.txt"
    ref.write_text(REF)
    run = make_run(tmp_path / "seed1", {0: 1.0})
    monkeypatch.setattr(sys, "argv", ["mrq_curve_table.py", str(run), "--ref", str(ref), "--ref-env", "Dmc-nope"])
    with pytest.raises(SystemExit, match="'Dmc-nope' is not in the reference's dmc_results.txt; it has "
                                         "Dmc-cartpole-swingup, Dmc-walker-walk"):
        table_mod.main()


def test_a_run_without_eval_csv_is_one_clear_error(table_mod, tmp_path, monkeypatch):
    ref = tmp_path / "dmc_results.txt"
    ref.write_text(REF)
    monkeypatch.setattr(sys, "argv", ["mrq_curve_table.py", str(tmp_path / "nope"), "--ref", str(ref),
                                      "--ref-env", "Dmc-cartpole-swingup"])
    with pytest.raises(SystemExit, match="mrq_curve_table: .*nope/eval.csv does not exist"):
        table_mod.main()


# DrQ-v2's layout (curves/dmc_<task>.csv): an unnamed index column, agent, task, seed, frame, episode_reward, hour
DRQV2 = """,agent,task,seed,frame,episode_reward,hour
0,DrQ-v2,walker_walk,1,0,20.0,0.0
1,DrQ-v2,walker_walk,1,20000,30.0,0.1
2,DrQ-v2,walker_walk,2,0,24.0,0.0
3,DrQ-v2,walker_walk,2,20000,50.0,0.1
4,DrQ-v2,walker_walk,2,40000,90.0,0.2
"""


def test_drqv2_curve_keeps_frames_every_seed_has(table_mod):
    assert table_mod.drqv2_curve(DRQV2) == {0: [20.0, 24.0], 20000: [30.0, 50.0]}
    with pytest.raises(ValueError, match="no rows"):
        table_mod.drqv2_curve(DRQV2.splitlines()[0] + "\n")


def test_other_agents_get_a_column_each_at_the_same_frames(table_mod, tmp_path, monkeypatch, capsys):
    ref = tmp_path / "dmc_results.txt"
    ref.write_text(REF)
    (tmp_path / "drqv2.csv").write_text(DRQV2)
    mrq = [make_run(tmp_path / "mrq" / f"seed{i}", {0: 1.0, 20000: 2.0, 40000: 3.0}) for i in (1, 2)]
    for i in (1, 2, 3):
        make_run(tmp_path / "tdmpc2" / f"seed{i}", {0: 5.0, 20000: 100.0 * i})
    header, row = run_main(table_mod, monkeypatch, capsys, *map(str, mrq), "--ref", str(ref), "--ref-env",
                           "Dmc-cartpole-swingup", "--reps", "50", "--drqv2", str(tmp_path / "drqv2.csv"),
                           "--beside", f"robotrl TD-MPC2={tmp_path / 'tdmpc2' / 'seed*'}")
    assert header.endswith("| robotrl TD-MPC2 IQM [95% CI], 3 seeds | DrQ-v2 published (its curves/, pixels) "
                           "IQM [95% CI], 2 seeds |")
    assert row["20,000"][6].startswith("200.0 [") and row["20,000"][7].startswith("40.0 [")
    assert row["40,000"][6:] == ["-", "-"]  # neither has 40k frames: no number, not a neighbour's


def test_a_beside_that_matches_no_run_is_one_clear_error(table_mod, tmp_path, monkeypatch):
    ref = tmp_path / "dmc_results.txt"
    ref.write_text(REF)
    run = make_run(tmp_path / "seed1", {0: 1.0})
    monkeypatch.setattr(sys, "argv", ["mrq_curve_table.py", str(run), "--ref", str(ref), "--ref-env",
                                      "Dmc-cartpole-swingup", "--beside", f"TD-MPC2={tmp_path / 'nope*'}"])
    with pytest.raises(SystemExit, match="expected LABEL=GLOB matching run directories"):
        table_mod.main()


def test_beside_runs_stopped_at_different_frames_say_how_many_seeds_each_cell_has(table_mod, tmp_path, monkeypatch,
                                                                                   capsys):
    ref = tmp_path / "dmc_results.txt"
    ref.write_text(REF)
    mrq = [make_run(tmp_path / "mrq" / f"seed{i}", {0: 1.0, 20000: 2.0}) for i in (1, 2)]
    make_run(tmp_path / "tdmpc2" / "seed1", {20000: 100.0})
    make_run(tmp_path / "tdmpc2" / "seed2", {0: 7.0})
    header, row = run_main(table_mod, monkeypatch, capsys, *map(str, mrq), "--ref", str(ref), "--ref-env",
                           "Dmc-cartpole-swingup", "--reps", "50", "--all-frames",
                           "--beside", f"robotrl TD-MPC2={tmp_path / 'tdmpc2' / 'seed*'}")
    assert header.endswith("| robotrl TD-MPC2 IQM [95% CI], 2 seeds |")
    assert row["20,000"][6] == "100.0 (1 of 2 seeds)" and row["0"][6] == "7.0 (1 of 2 seeds)"


def test_the_reference_run_here_goes_beside_from_its_eval_files(table_mod, tmp_path, monkeypatch, capsys):
    """bench/mrq_reference_run.py leaves the reference's own eval files: one mean return per line, every 5,000 agent
    steps from 0 (= 10,000 frames at action repeat 2); a glob of them is a column like robotrl runs."""
    ref = tmp_path / "dmc_results.txt"
    ref.write_text(REF)
    mrq = [make_run(tmp_path / "mrq" / f"seed{i}", {0: 1.0, 10000: 2.0, 20000: 3.0}) for i in (1, 2)]
    evals = tmp_path / "reference_here" / "evals"
    evals.mkdir(parents=True)
    (evals / "MRQ+Dmc-cartpole-swingup+1.txt").write_text("5.0\n10.0\n300.0\n")
    (evals / "MRQ+Dmc-cartpole-swingup+2.txt").write_text("7.0\n20.0\n")  # stopped before 20k frames
    header, row = run_main(table_mod, monkeypatch, capsys, *map(str, mrq), "--ref", str(ref), "--ref-env",
                           "Dmc-cartpole-swingup", "--reps", "50", "--all-frames",
                           "--beside", f"reference MR.Q run here={evals / 'MRQ+*.txt'}")
    assert header.endswith("| reference MR.Q run here IQM [95% CI], 2 seeds |")
    assert row["0"][6].startswith("6.0 [") and row["10,000"][6].startswith("15.0 [")
    assert row["20,000"][6] == "300.0 (1 of 2 seeds)"
    # an empty eval file, or one with a non-number, is one clear error naming it
    (evals / "MRQ+Dmc-cartpole-swingup+2.txt").write_text("7.0\nfell over\n")
    with pytest.raises(SystemExit, match=r"MRQ\+Dmc-cartpole-swingup\+2.txt"):
        table_mod.main()
    (evals / "MRQ+Dmc-cartpole-swingup+2.txt").write_text("")
    with pytest.raises(SystemExit, match=r"MRQ\+Dmc-cartpole-swingup\+2.txt: no evaluations"):
        table_mod.main()
