"""Hydra config groups: agent/ env/ reward/ robot/ mirror the package folders; the shared defaults are structured
configs (``robotrl/config_schema.py``).

Hydra imports this package before it reads a config (``initialize_config_module("robotrl.configs")``,
``pkg://robotrl.configs``), so storing the structured configs here is what lets every composition, in any process
(sweep jobs included), find ``base/*``; storing them again is harmless.
"""

from robotrl.config_schema import register_configs

register_configs()
