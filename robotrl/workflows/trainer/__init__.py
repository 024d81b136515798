"""The trainer from parts: ``factory.make_trainer(cfg, run_dir)`` checks which trainer a config asks for and builds
it from a run state (``state``), a schedule (``schedule``), a collector (``local``; ``workflows/vector_train``,
``workflows/ray_collector``), hooks for robots and torchrun (``hooks``), the shared run services (``run``,
``evaluation``) and the loop (``loop``; SB3's own loop is ``workflows/sb3_train``).

Nothing is imported here, so a collector module can import a part without importing the factory (no cycle).
"""
