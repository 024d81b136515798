"""robotrl: an embodied robot learning stack (visual RL in MuJoCo, swappable rewards, hardware deployment)."""

__version__ = "0.1.0"
