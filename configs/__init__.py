"""Hydra config groups: agent/ env/ reward/ robot/ mirror the package folders; the shared defaults are structured
configs (``robotrl/config_schema.py``), stored in hydra's ConfigStore by ``robotrl.config.register_hydra()``, which
whatever composes a config calls first (importing this package registers nothing).
"""
