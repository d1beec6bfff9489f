"""The sandbox isolation modes this machine can run, for tests that must pass in each of them.

    from isolation_modes import MODES, FILE_HIDING_MODES, use_mode
"""

from __future__ import annotations

import contextlib
import os

from sdpo_cli.verify import sandbox


@contextlib.contextmanager
def use_mode(mode: str):
    """Force SDPO_SANDBOX=mode for the block (and forget the detection before and after)."""
    old = os.environ.get("SDPO_SANDBOX")
    os.environ["SDPO_SANDBOX"] = mode
    sandbox.reset()
    try:
        yield mode
    finally:
        if old is None:
            os.environ.pop("SDPO_SANDBOX", None)
        else:
            os.environ["SDPO_SANDBOX"] = old
        sandbox.reset()


def _runs(mode: str) -> bool:
    with use_mode(mode):
        return sandbox.run_python("print('ok')", limits=sandbox.Limits(time_s=5)).stdout == "ok\n"


# Strongest first; rlimits needs nothing and always runs.
FILE_HIDING_MODES = [m for m in ("bwrap", "unshare") if _runs(m)]
MODES = FILE_HIDING_MODES + ["rlimits"]
