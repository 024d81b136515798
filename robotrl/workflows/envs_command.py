"""``robotrl envs [SUITE ...]``: the env names, the choices of ``env=``."""

from __future__ import annotations

from robotrl.commands import Args, Command
from robotrl.errors import ConfigError

SUITES = ("dmc", "metaworld", "gym")


def list_env_names(args: Args) -> int:
    """Print every env name of the suites asked for (all without one); LIBERO's tasks when ``libero`` is asked."""
    from robotrl.envs import list_envs

    suites = args.positional
    names = [n for n in list_envs() if not suites or n.split("/")[0] in suites] if set(suites) != {"libero"} else []
    if "libero" in suites:
        from robotrl.envs.libero import list_tasks

        names += list_tasks()
    if not names:
        raise ConfigError(f"unknown suite {suites}; expected one of {', '.join(SUITES)}, libero")
    print("\n".join(names))
    return 0


COMMAND = Command(
    name="envs", summary="list every env name", usage="robotrl envs [SUITE ...]",
    about=f"List the env names (the choices of env=), all suites or only SUITE ({', '.join(SUITES)}, or libero: the "
          "optional LIBERO suite's tasks, env=libero env.benchmark=B env.task=T; needs pip install 'robotrl[libero]').",
    run=list_env_names, positional="SUITE", examples=("robotrl envs", "robotrl envs metaworld", "robotrl envs libero"))
