"""bench/worldenv_curve.py (issue 27 §2: the gate as the world model trains): the parts that decide what its table
says -- cutting a larger measurement to fewer episodes, the csv row built from the gate's own report, bad --steps."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from robotrl.workflows.worldenv.fidelity import gate_report

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def curve():
    spec = importlib.util.spec_from_file_location("worldenv_curve", ROOT / "bench" / "worldenv_curve.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TASKS = ["reach", "drawer-close"]


def rows(n: int, rates: list[float], seed: int = 0) -> list[dict]:
    """Measured rows of learned policies with true rates ``rates`` plus random / zero actions, ``n`` per task."""
    rng = np.random.default_rng(seed)
    out = []
    for k, p in enumerate([*rates, 0.1, 0.0]):
        sim = {t: [bool(v) for v in rng.random(n) < p] for t in TASKS}
        world = {t: [bool(v) for v in rng.random(n) < p] for t in TASKS}
        name = ["random", "zero"][k - len(rates)] if k >= len(rates) else f"vla{k}"
        out.append({"policy": name, "noise": 0.0, "digest": name, "sim_episodes": sim, "world_episodes": world,
                    "sim_success": float(np.mean(sim[TASKS[0]] + sim[TASKS[1]])),
                    "world_success": float(np.mean(world[TASKS[0]] + world[TASKS[1]]))})
    return out


def test_cut_to_fewer_episodes_keeps_the_first_ones(curve, tmp_path):
    """The gate at n episodes is the first n of each task (same seeds); the success rate is recomputed from them."""
    big = rows(8, [0.2, 0.5, 0.9])
    (tmp_path / "sim_rows_e8.json").write_text(json.dumps({"episodes": 8, "rows": big}))
    cut = curve.truncated(tmp_path / "sim_rows_e3.json", 3)
    assert len(cut) == len(big)
    for a, b in zip(cut, big, strict=True):
        assert a["sim_episodes"] == {t: b["sim_episodes"][t][:3] for t in TASKS}
        assert a["sim_success"] == pytest.approx(np.mean(b["sim_episodes"][TASKS[0]][:3] +
                                                         b["sim_episodes"][TASKS[1]][:3]))
    # never padded up from fewer episodes
    assert curve.truncated(tmp_path / "sim_rows_e9.json", 9) == []


def test_csv_row_is_the_gate_report(curve):
    """The row carries the gate's own r, CI, ceiling, agreement and verdict, over the learned policies only."""
    measured = rows(20, [0.1, 0.3, 0.5, 0.7, 0.9], seed=1)
    report = gate_report(measured, TASKS, 20, 0.8, 200, 0)
    report["model_step"] = 300
    report["model_report"] = {"frame_mse": {"recorded": 0.002, "other_episode": 0.005, "zero": 0.004},
                              "frames_follow_actions": True}
    report["reflector_report"] = {"consecutive": 2, "episodes": {"by_consecutive": {"2": {"accuracy": 0.75}}}}
    row = curve.curve_row("seed1", report, 12.0)
    assert row["pearson"] == report["pearson"] and row["ceiling"] == report["ceiling"]["median"]
    assert [row["pearson_lo"], row["pearson_hi"]] == report["pearson_ci95"]
    assert row["status"] == report["status"] and row["verdict"] == report["verdict"]
    assert row["n_policies"] == 5 and row["model_steps"] == 300 and row["reflector_episode_agreement"] == 0.75
    learned = [r for r in measured if r["policy"].startswith("vla")]
    assert row["sim_max"] == max(r["sim_success"] for r in learned)  # random / zero actions are not in the range
    assert row["world_min"] == min(r["world_success"] for r in learned)


def test_csv_row_reads_the_chosen_rule_and_an_older_file_gets_the_new_columns(curve, tmp_path):
    report = gate_report(rows(10, [0.1, 0.4, 0.8], seed=2), TASKS, 10, 0.8, 100, 0)
    report.update(model_step=300, model_report={"frame_mse": {"recorded": 0.002, "other_episode": 0.005,
                                                              "zero": 0.004}})
    report["reflector_report"] = {"consecutive": 1, "episodes": {"by_consecutive": {"1": {"accuracy": 0.5}}}}
    old = curve.curve_row("seed1", report, 1.0)
    del old["reflector_threshold"]  # a row of the version before the threshold was chosen
    path = tmp_path / "curve.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(old))
        w.writeheader()
        w.writerow(old)
    report["model_step"] = 550
    report["reflector_report"] = {"threshold": 0.9, "consecutive": 4, "episodes": {
        "best": "0.9/4", "rules": {"0.9/4": {"accuracy": 0.83}, "0.5/1": {"accuracy": 0.75}}}}
    new = curve.curve_row("seed1", report, 1.0)
    assert (new["reflector_threshold"], new["reflector_consecutive"], new["reflector_episode_agreement"]) == (
        0.9, 4, 0.83)
    curve.append_row(path, new)
    curve.table([path], tmp_path / "out")  # rows with and without the newer columns in one table
    assert len((tmp_path / "out" / "table.md").read_text().splitlines()) == 4
    got = list(csv.DictReader(path.open()))
    assert [r["model_steps"] for r in got] == ["300", "550"]
    assert [r["reflector_threshold"] for r in got] == ["", "0.9"]
    assert all(r["pearson"] == str(report["pearson"]) for r in got)  # every value under its own header


def test_the_gate_reports_r_over_the_checkpoints_alone_beside_the_verdict():
    """Degraded policies (held still) fail in both: they give r its spread. Over the checkpoints alone a WorldEnv that
    says every checkpoint succeeds has no r at all, whatever the verdict over the whole learned set."""
    measured = rows(20, [0.3, 0.5, 0.6, 0.1, 0.0], seed=4)
    for r in measured[3:5]:
        r["policy"] += "+hold0.9"
    for r in measured[:3]:  # WorldEnv: every checkpoint succeeds in every episode
        r["world_episodes"] = {t: [True] * 20 for t in TASKS}
        r["world_success"] = 1.0
    for r in measured[3:5]:
        r["world_episodes"] = {t: [False] * 20 for t in TASKS}
        r["world_success"] = 0.0
    report = gate_report(measured, TASKS, 20, 0.8, 200, 0)
    assert report["n_policies"] == 5 and report["pearson"] > 0.8  # carried by moves vs stays
    assert report["checkpoints_only"]["n_policies"] == 3 and np.isnan(report["checkpoints_only"]["pearson"])


@pytest.mark.parametrize("bad", ["1200,300", "300,300", "0,300", "300,abc", ""])
def test_bad_steps_are_one_clear_error(curve, bad):
    with pytest.raises(SystemExit, match="--steps"):
        curve.parse_steps(bad)


def test_table_writes_markdown_csv_and_plot(curve, tmp_path):
    measured = rows(10, [0.1, 0.4, 0.8], seed=2)
    report = gate_report(measured, TASKS, 10, 0.8, 100, 0)
    report.update(model_step=300, model_report={"frame_mse": {"recorded": 0.002, "other_episode": None,
                                                              "zero": 0.004}},
                  reflector_report={"consecutive": 1, "episodes": {"by_consecutive": {"1": {"accuracy": 0.5}}}})
    curve.append_row(tmp_path / "a.csv", curve.curve_row("seed1", report, 1.0))
    curve.table([tmp_path / "a.csv"], tmp_path / "out")
    md = (tmp_path / "out" / "table.md").read_text().splitlines()
    assert len(md) == 3 and "| seed1 | 10 | 300 |" in md[2] and report["status"] in md[2]
    assert (tmp_path / "out" / "curve.png").stat().st_size > 0


def test_point_cut_to_fewer_episodes_keeps_pairs(curve, tmp_path):
    """A point measured at 8 episodes per task gives the gate at 3 without measuring again: both sides cut alike, so
    each simulator episode stays paired with its WorldEnv episode."""
    big = rows(8, [0.2, 0.5, 0.9], seed=3)
    (tmp_path / "rows.json").write_text(json.dumps({"rows": big}))  # the first version's file: no "episodes" key
    cut = curve.world_truncated(tmp_path, 3)
    for a, b in zip(cut, big, strict=True):
        for k in ("sim", "world"):
            assert a[f"{k}_episodes"] == {t: b[f"{k}_episodes"][t][:3] for t in TASKS}
            assert a[f"{k}_success"] == pytest.approx(np.mean(sum((b[f"{k}_episodes"][t][:3] for t in TASKS), [])))
    assert curve.world_truncated(tmp_path, 8) == big  # the first version's file at its own count: as it is
    assert curve.world_truncated(tmp_path, 9) == []  # never padded up from fewer episodes


def test_regate_recomputes_every_point_from_its_measured_episodes(curve, tmp_path):
    """A change to the verdict's rule re-read over the measured pairs: each point's report and the csv rows of that
    episode count are rewritten from ``gate_report``, the other counts' rows and each point's cost kept."""
    run = tmp_path / "seed1"
    measured = rows(6, [0.1, 0.4, 0.8], seed=4)
    reports = {}
    for step in (300, 900):
        d = run / "curve" / f"step{step:05d}"
        d.mkdir(parents=True)
        (d / "config.yaml").write_text("tasks: [reach, drawer-close]\nseed: 3\nfidelity: {bootstrap: 50}\n")
        (d / "rows_e6.json").write_text(json.dumps({"episodes": 6, "rows": measured}))
        stale = {"verdict": "valid: an older rule", "status": "valid", "model_step": step,
                 "model_report": {"frame_mse": {"recorded": 0.002, "other_episode": 0.004, "zero": 0.004}},
                 "reflector_report": {"consecutive": 1, "episodes": {"by_consecutive": {"1": {"accuracy": 0.5}}}}}
        (d / "report_e6.json").write_text(json.dumps(stale))
        reports[step] = stale
    with (run / "curve" / "curve.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["run", "model_steps", "episodes_per_task", "status", "point_seconds"])
        w.writeheader()
        w.writerows([{"run": "seed1", "model_steps": s, "episodes_per_task": e, "status": "valid",
                      "point_seconds": 7.0 + s} for s in (300, 900) for e in (3, 6)])
    curve.regate(run, 6)
    expected = gate_report(measured, TASKS, 6, 0.8, 50, 3)
    for step in (300, 900):
        report = json.loads((run / "curve" / f"step{step:05d}" / "report_e6.json").read_text())
        assert report["verdict"] == expected["verdict"] and report["pearson"] == pytest.approx(expected["pearson"])
        assert report["model_step"] == step and report["reflector_report"] == stale["reflector_report"]
    out = list(csv.DictReader((run / "curve" / "curve.csv").open()))
    assert [(r["model_steps"], r["episodes_per_task"]) for r in out] == [("300", "3"), ("900", "3"), ("300", "6"),
                                                                         ("900", "6")]
    assert [r["status"] for r in out] == ["valid", "valid", expected["status"], expected["status"]]
    assert [float(r["point_seconds"]) for r in out] == [307.0, 907.0, 307.0, 907.0]


def test_a_train_role_clears_an_earlier_done_marker(curve, tmp_path, monkeypatch):
    """Extending a curve (a second train role to more steps) must not leave the first role's ``done`` marker, which
    tells a waiting gate that no model is coming (measured: the 2,000-step gates of seeds 2-3 ended at once)."""
    import robotrl.workflows.worldenv.world_model as wm

    models = tmp_path / "curve" / "models"
    models.mkdir(parents=True)
    (models / "step01200.pt").write_text("kept")
    (models / "done").write_text("1200\n")
    seen = []

    def fake_train_model(run, overrides):
        seen.append((overrides, (models / "done").exists()))
        (run / "model").mkdir(exist_ok=True)
        (run / "model" / "report.json").write_text("{}")
        (run / "model" / "model.pt").write_text("weights")

    monkeypatch.setattr(wm, "train_model", fake_train_model)
    curve.train(tmp_path, [1200, 2000], None)
    assert seen == [(["model.steps=2000"], False)]
    assert (models / "step02000.pt").read_text() == "weights" and (models / "done").read_text() == "2000\n"


def test_post_table_pairs_each_seed_with_its_own_bc_and_trivial_policies(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # as when run as a script: it imports worldenv_table beside it
    spec = importlib.util.spec_from_file_location("worldenv_post_table", ROOT / "bench" / "worldenv_post_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def pol(reach: float, drawer: float) -> dict:
        return {"tasks": {"reach": {"success": reach}, "drawer-close": {"success": drawer}},
                "mean": {"success": (reach + drawer) / 2}}

    folders = []
    for seed, after in ((1, 0.4), (2, 0.6), (3, 0.8)):
        f = tmp_path / f"step01200-post{seed}"
        (f / "post").mkdir(parents=True)
        report = {"before": {**pol(0.2, 0.8), "episodes_per_task": 20}, "after": pol(after, 0.8),
                  "trivial": {"random": pol(0.0, 0.2), "zero": pol(0.0, 0.0)}}
        (f / "post" / "report.json").write_text(json.dumps(report))
        (f / "post" / "train.csv").write_text("iteration,world_success\n1,0.0\n2,0.5\n3,1.0\n")
        folders.append(f)
    mod.main(folders)
    out = capsys.readouterr().out
    assert "| step01200-post1 | 20 | 0.500 (0.20/0.80) | 0.600 (0.40/0.80) | 0.100 (0.00/0.20) |" in out
    assert "+0.100 | 0.00 -> 1.00 |" in out and "+0.300" in out
    assert "| post-trained - BC | 0.100, 0.200, 0.300 |" in out


def test_regate_without_measured_points_is_one_clear_error(curve, tmp_path):
    """No ``step<N>/report_e<E>.json`` (no gate yet, or another --episodes): one line naming what is missing, and
    nothing written (before: a traceback, or a silent rewrite of curve.csv)."""
    run = tmp_path / "seed1"
    (run / "curve" / "step00300").mkdir(parents=True)
    (run / "curve" / "step00300" / "report_e6.json").write_text("{}")
    with pytest.raises(SystemExit, match=r"report_e7\.json"):
        curve.regate(run, 7)
    assert not (run / "curve" / "curve.csv").exists()
    with pytest.raises(SystemExit, match=r"report_e6\.json"):
        curve.regate(tmp_path / "empty", 6)


def test_latest_gates_the_newest_kept_model_so_a_slow_gate_follows_the_trainer(curve):
    assert curve.pick_point([600, 1200, 2000], {600, 1200}, latest=True) == 1200
    assert curve.pick_point([600, 1200, 2000], {600, 1200}, latest=False) == 600
    assert curve.pick_point([2000, 3000], set(), latest=True) == 2000  # nothing kept yet: wait for the first


def test_stop_in_and_stop_at_together_is_one_clear_error(curve, tmp_path):
    (tmp_path / "config.yaml").write_text("seed: 1\n")
    with pytest.raises(SystemExit, match="one of them"):
        curve.main(["gate", str(tmp_path), "--episodes", "4", "--stop-at", "10:00", "--stop-in", "60"])
