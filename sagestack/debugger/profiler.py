"""System-metrics sampler that runs beside a training instance.

The platform starts one :class:`SystemSampler` per instance (``algo-1``,
``algo-2``...) in its own process; it never runs inside the training loop. Every
``interval_ms`` it reads machine-wide counters (per-core CPU and I/O wait,
memory, disk and network throughput) and the counters of the instance's
process tree, and writes SageMaker Debugger's system-metrics layout::

    <out_dir>/system/incremental/<YYYYMMDDHH>/<epoch>.<host>.json

``<epoch>`` is the UTC minute the file covers (a multiple of 60) and
``<YYYYMMDDHH>`` the UTC hour of that minute. A minute's file is written once,
when the first sample of the next minute is taken (or at :meth:`stop`), by
writing a dot-file and renaming it, so an uploader sees only complete files
and should skip names starting with ``.``. Each line is one record::

    {"Type":"cpu","Name":"cpu0","Dimension":"CPUUtilization","Value":42.0,"NodeId":"algo-1","Timestamp":1718.5}

Records written per sample, all with the same ``Timestamp`` (UNIX seconds):

=========  ===================================  =====================  =====================
Type       Name                                 Dimension              Value
=========  ===================================  =====================  =====================
cpu        cpu0, cpu1, ...                      CPUUtilization         % busy, machine-wide
cpu        cpu0, cpu1, ...                      I/OWaitPercentage      % waiting for I/O
memory     MemoryUsedPercent                    ""                     % of RAM in use
i/o        ReadThroughputInBytesPerSecond       ""                     all disks
i/o        WriteThroughputInBytesPerSecond      ""                     all disks
i/o        IOPS                                 ""                     reads + writes per s
network    ReceiveBytesPerSecond                Platform               all interfaces
network    TransmitBytesPerSecond               Platform               all interfaces
process    ProcessCPUUtilization                Algorithm              % of the machine
process    ProcessCPUCores                      Algorithm              cores busy (1.0 = one)
process    ProcessMemoryRSSBytes                Algorithm              resident memory
process    ProcessMemoryUsedPercent             Algorithm              RSS as % of RAM
process    ProcessReadBytesPerSecond            Algorithm              storage reads
process    ProcessWriteBytesPerSecond           Algorithm              storage writes
process    ProcessCount                         Algorithm              processes in the tree
process    ProcessThreads                       Algorithm              threads in the tree
=========  ===================================  =====================  =====================

The first eight rows are SageMaker's own records. The ``process`` rows are
sagestack's: here instances are process trees, not containers, so they are
named so that tools written for SageMaker's data never mistake them for
machine-wide values. No GPU is sampled: the absence of ``GPUUtilization``
records is how readers (and :mod:`sagestack.debugger.rules`) know there is
none. The network ``Algorithm`` dimension (the container's own traffic) is not
written, because an instance has no network namespace of its own.

Cost: one sample reads ``/proc/stat``, ``/proc/meminfo``, ``/proc/diskstats``,
``/proc/net/dev`` and a few files per process of the tree; the tree itself is
refreshed at most once a second from ``/proc/<pid>/task/*/children``. That is
well under a millisecond of one core per sample, in the platform's process.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

#: Allowed ``ProfilingIntervalInMilliseconds`` values (API model); others still work.
ALLOWED_INTERVALS_MS = (100, 200, 500, 1000, 5000, 60000)
#: Seconds of samples per file, as SageMaker rotates them.
FILE_SPAN_S = 60
#: How often the process tree is re-scanned for new children.
TREE_REFRESH_S = 1.0
#: Marker file the platform writes when the job ends (see :func:`mark_job_end`).
JOB_END_MARKER = "training_job_end.ts"


def system_file_path(out_dir: Path, minute_epoch: int, host: str) -> Path:
    """Where the records of the minute starting at ``minute_epoch`` go."""
    hour = datetime.fromtimestamp(minute_epoch, UTC).strftime("%Y%m%d%H")
    return Path(out_dir) / "system" / "incremental" / hour / f"{minute_epoch}.{host}.json"


def mark_job_end(profiler_dir: Path, when: float | None = None) -> None:
    """Write ``system/`` and ``framework/training_job_end.ts`` (the job-end markers SageMaker leaves)."""
    stamp = f"{time.time() if when is None else when:.6f}\n"
    for sub in ("system", "framework"):
        path = Path(profiler_dir) / sub / JOB_END_MARKER
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(stamp)


def _record(type_: str, name: str, dimension: str, value: float, host: str, ts: float) -> str:
    # Key order and compact separators follow the files SageMaker writes.
    return json.dumps(
        {"Type": type_, "Name": name, "Dimension": dimension, "Value": round(value, 2), "NodeId": host,
         "Timestamp": round(ts, 6)},
        separators=(",", ":"),
    )


def _busy_and_total(times: Any) -> tuple[float, float, float]:
    """(busy, iowait, total) seconds of one CPU; guest time is already inside user/nice."""
    fields = times._asdict()
    total = sum(v for k, v in fields.items() if k not in ("guest", "guest_nice"))
    idle = fields.get("idle", 0.0)
    iowait = fields.get("iowait", 0.0)
    steal = fields.get("steal", 0.0)
    return total - idle - iowait - steal, iowait, total


class _MachineCounters:
    """Machine-wide counters, turned into rates between two reads."""

    def __init__(self) -> None:
        self._cpu = psutil.cpu_times(percpu=True)
        self._cpu_last: dict[int, tuple[float, float]] = {}
        self._disk = psutil.disk_io_counters()
        self._net = psutil.net_io_counters()
        self._at = time.monotonic()

    def read(self, host: str, ts: float) -> list[str]:
        now = time.monotonic()
        dt = max(now - self._at, 1e-6)
        self._at = now
        lines = self._cpu_lines(host, ts)
        lines.append(_record("memory", "MemoryUsedPercent", "", psutil.virtual_memory().percent, host, ts))
        lines += self._disk_lines(host, ts, dt)
        lines += self._net_lines(host, ts, dt)
        return lines

    def _cpu_lines(self, host: str, ts: float) -> list[str]:
        cur = psutil.cpu_times(percpu=True)
        prev, self._cpu = self._cpu, cur
        if len(prev) != len(cur):  # CPU hot-plug: start again from this read
            return []
        lines = []
        for i, (a, b) in enumerate(zip(prev, cur, strict=True)):
            busy0, wait0, total0 = _busy_and_total(a)
            busy1, wait1, total1 = _busy_and_total(b)
            span = total1 - total0
            if span <= 0:
                # Samples closer than the kernel's tick (the final one at stop can be): the counters have
                # not moved, so repeat this CPU's last figures; every sample keeps one record per CPU.
                busy, wait = self._cpu_last.get(i, (0.0, 0.0))
            else:
                busy = min(max(100.0 * (busy1 - busy0) / span, 0.0), 100.0)
                wait = min(max(100.0 * (wait1 - wait0) / span, 0.0), 100.0)
                self._cpu_last[i] = (busy, wait)
            lines.append(_record("cpu", f"cpu{i}", "CPUUtilization", busy, host, ts))
            lines.append(_record("cpu", f"cpu{i}", "I/OWaitPercentage", wait, host, ts))
        return lines

    def _disk_lines(self, host: str, ts: float, dt: float) -> list[str]:
        cur = psutil.disk_io_counters()
        prev, self._disk = self._disk, cur
        if prev is None or cur is None:  # no /proc/diskstats (some containers)
            return []
        ops = (cur.read_count + cur.write_count) - (prev.read_count + prev.write_count)
        return [
            _record("i/o", "ReadThroughputInBytesPerSecond", "", max(cur.read_bytes - prev.read_bytes, 0) / dt,
                    host, ts),
            _record("i/o", "WriteThroughputInBytesPerSecond", "",
                    max(cur.write_bytes - prev.write_bytes, 0) / dt, host, ts),
            _record("i/o", "IOPS", "", max(ops, 0) / dt, host, ts),
        ]

    def _net_lines(self, host: str, ts: float, dt: float) -> list[str]:
        cur = psutil.net_io_counters()
        prev, self._net = self._net, cur
        if prev is None or cur is None:
            return []
        return [
            _record("network", "ReceiveBytesPerSecond", "Platform", max(cur.bytes_recv - prev.bytes_recv, 0) / dt,
                    host, ts),
            _record("network", "TransmitBytesPerSecond", "Platform",
                    max(cur.bytes_sent - prev.bytes_sent, 0) / dt, host, ts),
        ]


@dataclass
class _ProcState:
    proc: psutil.Process
    cpu: float  # user + system seconds at the last read
    read_bytes: int | None
    write_bytes: int | None


class _ProcessTree:
    """CPU, memory and I/O of the processes under the provided root pids."""

    def __init__(self, pids_provider: Callable[[], Iterable[int]]) -> None:
        self._provider = pids_provider
        self._known: dict[int, _ProcState] = {}
        self._refreshed = 0.0
        self._at = time.monotonic()
        self._ncpu = psutil.cpu_count() or 1
        self._ram = psutil.virtual_memory().total

    def _refresh(self) -> None:
        procs: dict[int, psutil.Process] = {}
        try:
            roots = list(self._provider())
        except Exception:  # the provider belongs to the platform; a failure there must not stop sampling
            log.exception("pids provider failed")
            roots = []
        for pid in roots:
            for member in _descendants(pid):
                try:
                    procs[member] = self._known[member].proc if member in self._known else psutil.Process(member)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
        for pid, proc in procs.items():
            state = self._known.get(pid)
            # A recycled pid is a different process: compare creation times through the cached object.
            if state is None or state.proc != proc:
                self._known[pid] = self._first_read(proc)
        for pid in set(self._known) - set(procs):
            del self._known[pid]

    @staticmethod
    def _first_read(proc: psutil.Process) -> _ProcState:
        # Baseline taken now, so time spent before the process joined the tree is not counted.
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                io = _io_counters(proc)
            return _ProcState(proc, times.user + times.system, *io)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return _ProcState(proc, 0.0, None, None)

    def read(self, host: str, ts: float) -> list[str]:
        now = time.monotonic()
        if now - self._refreshed >= TREE_REFRESH_S:
            self._refresh()
            self._refreshed = now
        dt = max(now - self._at, 1e-6)
        self._at = now
        if not self._known:
            return []
        cpu = rss = threads = 0.0
        read = write = 0
        gone = []
        for pid, st in self._known.items():
            try:
                with st.proc.oneshot():
                    times = st.proc.cpu_times()
                    rss += st.proc.memory_info().rss
                    threads += st.proc.num_threads()
                    rb, wb = _io_counters(st.proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                gone.append(pid)
                continue
            used = times.user + times.system
            cpu += max(used - st.cpu, 0.0)
            st.cpu = used
            if rb is not None and st.read_bytes is not None:
                read += max(rb - st.read_bytes, 0)
                write += max((wb or 0) - (st.write_bytes or 0), 0)
            st.read_bytes, st.write_bytes = rb, wb
        for pid in gone:
            del self._known[pid]
        cores = cpu / dt
        values = [
            ("ProcessCPUUtilization", min(100.0 * cores / self._ncpu, 100.0)),
            ("ProcessCPUCores", cores),
            ("ProcessMemoryRSSBytes", rss),
            ("ProcessMemoryUsedPercent", 100.0 * rss / self._ram),
            ("ProcessReadBytesPerSecond", read / dt),
            ("ProcessWriteBytesPerSecond", write / dt),
            ("ProcessCount", float(len(self._known))),
            ("ProcessThreads", threads),
        ]
        return [_record("process", name, "Algorithm", value, host, ts) for name, value in values]


def _descendants(root: int) -> list[int]:
    """``root`` and every process below it.

    Linux lists each thread's children in ``/proc/<pid>/task/<tid>/children``:
    walking those costs in proportion to the tree, while psutil's
    ``children()`` reads the status of every process on the machine.
    """
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:  # exited
            continue
        except OSError:
            return _descendants_psutil(root)
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
            except FileNotFoundError:  # the thread exited, or the kernel lacks the file
                if tid == str(pid) and not os.path.exists(f"/proc/{pid}/task/{tid}/children") and \
                        os.path.exists(f"/proc/{pid}"):
                    return _descendants_psutil(root)
            except OSError:
                continue
    return found


def _descendants_psutil(root: int) -> list[int]:
    try:
        return [root] + [c.pid for c in psutil.Process(root).children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []


def _io_counters(proc: psutil.Process) -> tuple[int | None, int | None]:
    try:
        io = proc.io_counters()
    except (psutil.AccessDenied, AttributeError, NotImplementedError):
        return None, None
    return io.read_bytes, io.write_bytes


class SystemSampler:
    """Samples system metrics of one instance on a background thread.

    ``pids_provider`` returns the root pid(s) of the instance's process tree; it
    may return nothing until the instance has started. Use :meth:`start` and
    :meth:`stop` (or the object as a context manager). :meth:`set_interval`
    applies a new ``ProfilingIntervalInMilliseconds`` (UpdateTrainingJob).
    """

    def __init__(
        self,
        pids_provider: Callable[[], Iterable[int]],
        interval_ms: int,
        out_dir: Path | str,
        host: str = "algo-1",
    ) -> None:
        if interval_ms <= 0:
            raise ValueError(f"interval_ms must be positive, got {interval_ms}")
        self.out_dir = Path(out_dir)
        self.host = host
        self._interval = interval_ms / 1000.0
        self._tree = _ProcessTree(pids_provider)
        self._machine: _MachineCounters | None = None
        self._pending: dict[int, list[str]] = {}
        self._lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples = 0
        self.files_written: list[Path] = []

    @property
    def interval_ms(self) -> int:
        return round(self._interval * 1000)

    def set_interval(self, interval_ms: int) -> None:
        if interval_ms <= 0:
            raise ValueError(f"interval_ms must be positive, got {interval_ms}")
        self._interval = interval_ms / 1000.0

    def start(self) -> SystemSampler:
        if self._thread is not None:
            return self
        self._machine = _MachineCounters()
        self._stop_event.clear()
        self._thread = threading.Thread(target=self._run, name=f"sampler-{self.host}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop sampling and write every pending record (the current minute's file included)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop_event.set()
            thread.join(timeout)
            # A job shorter than one interval still gets a record: the machine-wide view at its end.
            try:
                self.sample()
            except Exception:
                log.debug("final sample failed", exc_info=True)
        self.flush(everything=True)

    def __enter__(self) -> SystemSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def sample(self) -> int:
        """Take one sample now; returns the number of records. The thread calls this every interval."""
        if self._machine is None:
            self._machine = _MachineCounters()
        ts = time.time()
        lines = self._machine.read(self.host, ts) + self._tree.read(self.host, ts)
        minute = int(ts // FILE_SPAN_S) * FILE_SPAN_S
        with self._lock:
            self._pending.setdefault(minute, []).extend(lines)
            self.samples += 1
        self.flush(everything=False, now_minute=minute)
        return len(lines)

    def flush(self, everything: bool = True, now_minute: int | None = None) -> None:
        """Write the files of finished minutes (all pending ones when ``everything``)."""
        with self._lock:
            due = sorted(m for m in self._pending if everything or (now_minute is not None and m < now_minute))
            batches = [(m, self._pending.pop(m)) for m in due]
        for minute, lines in batches:
            if lines:
                self._write(minute, lines)

    def _write(self, minute: int, lines: list[str]) -> None:
        path = system_file_path(self.out_dir, minute, self.host)
        path.parent.mkdir(parents=True, exist_ok=True)
        body = "\n".join(lines) + "\n"
        if path.exists():  # sampling restarted within the same minute: keep what was there
            body = path.read_text() + body
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(body)
        os.replace(tmp, path)
        self.files_written.append(path)

    def _run(self) -> None:
        deadline = time.monotonic()
        failures = 0
        while True:
            deadline += self._interval
            delay = deadline - time.monotonic()
            if delay < 0:  # fell behind (suspended machine, slow disk): skip the missed samples
                deadline = time.monotonic()
                delay = 0.0
            if self._stop_event.wait(delay):
                return
            try:
                self.sample()
                failures = 0
            except Exception:
                failures += 1
                if failures in (1, 10, 100):
                    log.exception("system metrics sample failed (%d in a row)", failures)
