"""Several instance processes training one model with XGBoost's collective.

Protocol (SageMaker's, in two rounds, with the ports supplied by the platform):

1. **Who has data.** Every host of ``resourceconfig.json`` joins a group on
   ``SAGESTACK_TRACKER_PORT`` after reading its own channels and reports
   whether it has training data (and, when configured, validation data),
   its feature count, or that it failed. A failure anywhere stops every host;
   hosts with dense data must agree on the number of features. When every
   host has data, training runs in this same group.
2. **Training without the empty hosts.** Otherwise hosts without data leave
   (exit 0) and the others form a second group on ``SAGESTACK_TRACKER_PORT + 1``;
   a single data host trains alone.

In the training group gradients and metrics are all-reduced; rank 0 prints
the round lines and saves the model. An error inside a group is signalled to
the peers, which then fail at once instead of waiting for the timeout.

The first host (sorted, as SageMaker sorts them) runs both trackers, even if
it has no data itself; ranks follow the sorted host order, so the first host
with data is rank 0.
"""

from __future__ import annotations

import logging
import os
import re
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

import numpy as np
from xgboost import collective
from xgboost.core import XGBoostError
from xgboost.tracker import RabitTracker

from sagestack.algorithms.errors import PlatformError

log = logging.getLogger(__name__)

#: Address of the tracker (the first host's instance), identical for all instances.
ENV_TRACKER_HOST = "SAGESTACK_TRACKER_HOST"
#: Port of the first round's tracker; the training round uses this port + 1.
ENV_TRACKER_PORT = "SAGESTACK_TRACKER_PORT"
#: Seconds to wait for the other hosts (data loading skew) and for any collective call.
ENV_COLLECTIVE_TIMEOUT = "SAGESTACK_COLLECTIVE_TIMEOUT"

DEFAULT_TIMEOUT = 900  # SageMaker's containers wait up to 15 minutes for their peers
CONNECT_INTERVAL = 0.2  # seconds between tries to reach a tracker that is not up yet

HAS_DATA, NO_DATA, FAILED = 0, 1, 2


@dataclass(frozen=True)
class Cluster:
    """This instance's place among the training job's instances."""

    hosts: tuple[str, ...]
    current: str
    tracker_host: str
    tracker_port: int
    timeout: int = DEFAULT_TIMEOUT

    @classmethod
    def from_env(cls, hosts: list[str], current: str, environ: Mapping[str, str]) -> Cluster:
        ordered = tuple(sorted(hosts))
        if current not in ordered:
            raise PlatformError(f"current_host {current} is not one of the hosts {list(ordered)}")
        try:
            host = environ[ENV_TRACKER_HOST]
            port = int(environ[ENV_TRACKER_PORT])
        except (KeyError, ValueError) as exc:
            raise PlatformError(
                f"Distributed training needs {ENV_TRACKER_HOST} and {ENV_TRACKER_PORT} in the environment"
            ) from exc
        timeout = int(environ.get(ENV_COLLECTIVE_TIMEOUT, DEFAULT_TIMEOUT))
        return cls(ordered, current, host, port, timeout)

    @property
    def runs_trackers(self) -> bool:
        return self.current == self.hosts[0]


@dataclass(frozen=True)
class HostReport:
    """What one host tells the others in the first round."""

    status: int
    n_features: int = 0
    sparse: bool = False


class Tracker:
    """A RabitTracker for ``n_workers`` workers, run in a background thread of this process."""

    def __init__(self, host: str, port: int, n_workers: int, timeout: int) -> None:
        self.timeout = timeout
        self._tracker = RabitTracker(
            n_workers=n_workers, host_ip=host, port=port, sortby="task", timeout=timeout
        )
        self._tracker.start()
        log.info("Started collective tracker on %s:%s for %d worker(s)", host, port, n_workers)

    def wait(self) -> None:
        """Wait until every worker has left; a tracker that times out only costs a warning."""
        try:
            self._tracker.wait_for(self.timeout)
        except Exception as exc:  # the group is over either way; the workers report real failures
            log.warning("Collective tracker did not shut down cleanly: %s", exc)
        finally:
            self._tracker.free()


def _join(args: dict[str, str | int], deadline: float) -> None:
    """``collective.init``, retried quickly while the tracker is not listening yet.

    xgboost's own reconnection waits 2, 4, 6... seconds between tries, which
    turns a tracker that starts one second late into a ten-second stall.
    """
    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # one "connection refused" warning per try otherwise
            try:
                collective.init(**args)
                return
            except XGBoostError as exc:
                if "Failed to connect to the tracker" not in str(exc) or time.monotonic() > deadline:
                    raise
        time.sleep(CONNECT_INTERVAL)


@contextmanager
def _group(cluster: Cluster, port: int, task_index: int, tracker: Tracker | None) -> Iterator[None]:
    """Be a worker of the group at ``port``; on the first host, wait for ``tracker`` afterwards."""
    args: dict[str, str | int] = {
        "dmlc_tracker_uri": cluster.tracker_host,
        "dmlc_tracker_port": port,
        # The tracker sorts ranks by task id as strings: pad so that 10 sorts after 9.
        "dmlc_task_id": f"{task_index:06d}",
        "dmlc_timeout": cluster.timeout,
        "dmlc_retry": 1,
    }
    _join(args, time.monotonic() + cluster.timeout)
    try:
        yield
    except BaseException:
        # Peers blocked in a collective call fail at once instead of after the timeout.
        collective.signal_error()
        raise
    finally:
        collective.finalize()
    # Not reached after an error: the process is about to exit with its tracker thread,
    # while waiting could block until the timeout.
    if tracker is not None:
        tracker.wait()


def start_first_tracker(cluster: Cluster) -> Tracker | None:
    """On the first host, start the first round's tracker (call early: peers may connect any time)."""
    if not cluster.runs_trackers:
        return None
    return Tracker(cluster.tracker_host, cluster.tracker_port, len(cluster.hosts), cluster.timeout)


def first_round(cluster: Cluster, tracker: Tracker | None) -> AbstractContextManager[None]:
    """The group of all hosts; training runs in it directly when every host has data."""
    return _group(cluster, cluster.tracker_port, cluster.hosts.index(cluster.current), tracker)


def exchange_reports(cluster: Cluster, mine: HostReport) -> dict[str, HostReport]:
    """Every host's report, by host name (inside :func:`first_round`)."""
    table = np.zeros((len(cluster.hosts), 3), dtype=np.int64)
    # +1: a zero status would be indistinguishable from a host that sent nothing.
    table[cluster.hosts.index(cluster.current)] = (mine.status + 1, mine.n_features, int(mine.sparse))
    table = collective.allreduce(table, collective.Op.SUM).reshape(table.shape)
    return {
        host: HostReport(int(row[0]) - 1, int(row[1]), bool(row[2]))
        for host, row in zip(cluster.hosts, table, strict=True)
    }


def second_round(cluster: Cluster, members: list[str]) -> AbstractContextManager[None]:
    """The group of the hosts with data, when some host has none; the first host runs its tracker."""
    tracker = None
    if cluster.runs_trackers:
        tracker = Tracker(cluster.tracker_host, cluster.tracker_port + 1, len(members), cluster.timeout)
    return _group(cluster, cluster.tracker_port + 1, members.index(cluster.current), tracker)


def serve_second_round(cluster: Cluster, members: list[str]) -> None:
    """For the first host when it has no data: run the second round's tracker until training ends."""
    Tracker(cluster.tracker_host, cluster.tracker_port + 1, len(members), cluster.timeout).wait()


def rank() -> int:
    return collective.get_rank()


def is_distributed_now() -> bool:
    """Whether this process is currently a worker of a collective group."""
    return collective.is_distributed()


def is_collective_error(text: str) -> bool:
    """Whether an xgboost error comes from the collective (a peer failed or the network broke)."""
    return bool(_COLLECTIVE_SOURCES.search(text))


_COLLECTIVE_SOURCES = re.compile(r"\[(allreduce|allgather|broadcast|comm|socket|coll_c_api|tracker|loop)\.(cc|h)")


def env_summary(environ: Mapping[str, str] = os.environ) -> str:
    """One log line describing the collective settings in effect."""
    keys = (ENV_TRACKER_HOST, ENV_TRACKER_PORT, ENV_COLLECTIVE_TIMEOUT)
    return ", ".join(f"{k}={environ.get(k, '-')}" for k in keys)
