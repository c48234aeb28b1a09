"""The kernel of a notebook instance: ipykernel, made to die with the Jupyter server that started it.

Jupyter starts kernels in sessions of their own, so killing the server's
process group does not reach them; if the sagestack server is killed with -9,
Jupyter dies with it (PR_SET_PDEATHSIG) and this makes the kernels follow.
Usage (a kernelspec's argv): ``python -m sagestack.notebook_runtime.kernel -f {connection_file}``.
"""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    parent = os.getppid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        return
    if os.getppid() != parent:  # the parent died before the prctl call: nobody will signal us
        os._exit(1)


def main() -> None:
    _die_with_parent()
    from ipykernel.kernelapp import launch_new_instance

    launch_new_instance()


if __name__ == "__main__":
    main()
