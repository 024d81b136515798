"""bench/mrq_train_returns.py: training-episode returns per window of agent steps, robotrl runs vs reference logs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def mod(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import mrq_train_returns
    return mrq_train_returns


def _robotrl_run(root: Path, returns: dict[int, float]) -> None:
    root.mkdir(parents=True)
    lines = ["frame,step,episode,episode_return,value_loss"] + [f"{2 * s},{s},0,{r}," for s, r in returns.items()]
    lines.insert(2, "999,499,0,,0.5")  # an update-only row: no episode ended
    (root / "train.csv").write_text("\n".join(lines) + "\n")


def _reference_log(path: Path, returns: dict[int, float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = [f"Total T: {t}, Episode Num: {i}, Episode T: 500, Reward: {r:.3f}"
            for i, (t, r) in enumerate(returns.items())]
    path.write_text("-" * 40 + "\nExperiment\n" + "\n".join(body) + "\n")


def test_windows_average_the_episodes_that_end_inside_them(mod, tmp_path, monkeypatch, capsys):
    for i, shift in enumerate((0.0, 10.0)):
        _robotrl_run(tmp_path / f"ours/seed{i}", {500: 1.0 + shift, 1000: 3.0 + shift, 1500: 10.0 + shift})
    for i, shift in enumerate((0.0, 20.0, 40.0)):
        _reference_log(tmp_path / f"ref/MRQ+{i}.txt", {500: 5.0 + shift, 1000: 7.0 + shift, 1500: 100.0 + shift})
    monkeypatch.setattr(sys, "argv", ["x", str(tmp_path / "ours/seed*"), str(tmp_path / "ref/MRQ+*.txt"),
                                      "--windows", "0,1000,1500"])
    mod.main()
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()[2:]]
    assert [r[0] for r in rows] == ["| 0-1,000", "| 1,000-1,500", "| 0-1,500"]
    assert rows[0][1:5] == ["7.0", "2.0, 12.0", "26.0", "6.0, 26.0, 46.0"]
    assert rows[1][2] == "10.0, 20.0" and rows[2][2] == "4.7, 14.7"
    assert rows[1][5].startswith("0 of 6 / 0.1")  # every robotrl seed below every reference seed: exact p = 1/10


def test_a_run_that_stopped_early_or_a_foreign_log_is_named(mod, tmp_path, monkeypatch):
    _reference_log(tmp_path / "ref.txt", {500: 1.0})
    with pytest.raises(SystemExit, match="no episode ending in agent steps \\(500, 1000\\]"):
        mod.window_means([mod.reference_episodes(tmp_path / "ref.txt")], 500, 1000)
    (tmp_path / "other.txt").write_text("Evaluation at 0 time steps\n")
    with pytest.raises(SystemExit, match="other.txt: no 'Total T"):
        mod.reference_episodes(tmp_path / "other.txt")
