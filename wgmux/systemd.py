"""What systemd is doing with a unit, for `wgmux detach --unless-restarting`.

`systemctl restart` runs the unit's whole stop (ExecStop=, ExecStopPost=)
under a job of type "restart", which becomes a start job only once the stop
is done; `systemctl stop` runs it under a "stop" job, and a crash under no
job at all.  So an ExecStopPost= that finds its unit's job to be "restart"
knows a new start follows at once, and can leave the datapath attached for
it to take over (a restart that loses nothing); anything else is a stop.
"""

from __future__ import annotations

import subprocess
from typing import Optional

SYSTEMCTL = "systemctl"
QUERY_TIMEOUT = 5.0


class SystemdError(RuntimeError):
    """systemd could not be asked; the message says why."""


def unit_job(unit: str) -> Optional[str]:
    """The type of the job systemd runs for `unit` now ("restart", "stop",
    "start", ...), None if none.  SystemdError if systemctl cannot say."""
    try:
        out = subprocess.run([SYSTEMCTL, "list-jobs", "--no-legend", "--plain", "--full",
                              "--no-pager", unit],
                             capture_output=True, text=True, timeout=QUERY_TIMEOUT)
    except FileNotFoundError:
        raise SystemdError(f"{SYSTEMCTL} not found") from None
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SystemdError(f"{SYSTEMCTL} list-jobs: {e}") from None
    if out.returncode != 0:
        raise SystemdError(f"{SYSTEMCTL} list-jobs exited {out.returncode}: "
                           f"{out.stderr.strip() or out.stdout.strip()}")
    # "JOB UNIT TYPE STATE", one line per job ("No jobs running." when none)
    for line in out.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1] == unit:
            return fields[2]
    return None


def restarting(unit: str) -> bool:
    return unit_job(unit) == "restart"
