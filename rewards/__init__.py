"""Reward models. `reward=env` (the default) uses the environment's own reward; VLM rewards come later."""
