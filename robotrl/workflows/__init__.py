"""Workflows: the programs that wire plug-ins together (train, evaluate, reward-eval, goal generation, plots).

Layer 2 of robotrl (see docs/architecture.md): a workflow may import the core (``robotrl.*``) and every plug-in
(``robotrl.envs``, ``robotrl.agents``, ``robotrl.rewards``, ``robotrl.hardware``); only ``robotrl.cli`` imports a
workflow. Each ``robotrl <command>`` is one module here, so the CLI only parses arguments and calls it.
"""
