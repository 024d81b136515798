"""pytest plugin: which default-suite tests build a whole trainer (``make_trainer`` in the test process) or start a
training subprocess (``robotrl train``); the count issue 26 tracks (a part test builds neither).

    COUNT_TAG=now PYTHONPATH=bench MUJOCO_GL=egl .venv/bin/python -m pytest -q -p count_trainer_tests

writes /tmp/trainer_tests_<COUNT_TAG>.json: the node ids of each kind."""
from __future__ import annotations

import json
import os
import subprocess

HITS: dict[str, set[str]] = {"make_trainer": set(), "train_subprocess": set()}
CURRENT = {"id": None}


def pytest_runtest_setup(item):
    CURRENT["id"] = item.nodeid


def pytest_runtest_teardown(item):
    CURRENT["id"] = None


def pytest_configure(config):
    try:
        from robotrl.workflows.trainer import factory
    except ImportError:
        factory = None
    if factory is not None:
        original = factory.make_trainer

        def counted(*a, **k):
            if CURRENT["id"]:
                HITS["make_trainer"].add(CURRENT["id"])
            return original(*a, **k)
        factory.make_trainer = counted
        import robotrl.workflows.train as train
        if getattr(train, "make_trainer", None) is original:
            train.make_trainer = counted
        if getattr(train, "Trainer", None) is original:
            train.Trainer = counted
    init = subprocess.Popen.__init__

    def popen(self, args, *a, **k):
        words = [str(x) for x in (args if isinstance(args, (list, tuple)) else [args])]
        text = " ".join(words)
        if CURRENT["id"] and ("train" in words or " train " in text or "robotrl.cli train" in text):
            HITS["train_subprocess"].add(CURRENT["id"])
        return init(self, args, *a, **k)
    subprocess.Popen.__init__ = popen


def pytest_unconfigure(config):
    tag = os.environ.get("COUNT_TAG", "x")
    with open(f"/tmp/trainer_tests_{tag}.json", "w") as f:
        json.dump({k: sorted(v) for k, v in HITS.items()}, f, indent=1)
