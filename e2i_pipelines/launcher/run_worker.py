"""Entrypoint of every e2i run worker (Docker run container, Ray job): run the Dagster run worker,
then say how it ended, and record an OOM kill on the run itself.

``python -m e2i_pipelines.launcher.run_worker dagster api execute_run '<json>'`` starts the run
worker as a child with ``oom_score_adj`` 1000, so that when the memory cgroup is full the kernel
kills the run (or its step process), not this wrapper. When the child exits:

1. one line ``E2I-WORKER-EXIT {...}`` goes to stdout (exit code, OOM kills counted in this
   process's own memory cgroup while the run worked, the cgroup's limit, the Ray node);
2. the record is put on the run through the instance named in the command's ``instance_ref``
   (:meth:`TieredLauncherMixin.record_worker_exit`): an ``e2i/worker_exit`` tag always and, when
   the OOM counter rose, ``e2i/failure=oom`` + the launcher's diagnosis. The evidence is read
   where it lives, so the OOM promotion sensor needs no engine API (no Docker socket).
3. before that, what the run used goes on the run (:mod:`~e2i_pipelines.launcher.cgroup_usage`):
   ``e2i/peak_memory`` (bytes), ``e2i/cpu_seconds`` and their utilisation of the tier's budget
   (memory; CPUs x wall time), at the end of every run: success, failure or OOM kill; and each
   step's input size and wall time (:mod:`~e2i_pipelines.launcher.step_inputs`), its peak
   memory and CPU time as its hook measured them (:mod:`~e2i_pipelines.launcher.step_usage`),
   and ``e2i/peak_step``, the step with the largest peak.

Secrets are read on the node, never sent with the job: for every secret variable the node gives
only as a file (``DAGSTER_PG_PASSWORD_FILE=/run/secrets/...``, any name
:func:`~e2i_pipelines.launcher.job_env.is_secret_name` calls secret), the child gets
``DAGSTER_PG_PASSWORD`` read from that file (:func:`e2i_pipelines.core.secrets.export_file_secrets`).

Only the standard library is imported before the child exits, so the wrapper stays a few MB
while the run works; Dagster is imported afterwards, only to record.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

from e2i_pipelines.core.secrets import export_file_secrets
from e2i_pipelines.launcher.cgroup_memory import own_memory_cgroup
from e2i_pipelines.launcher.cgroup_usage import Usage, UsageMeter, own_cpu_cgroup, usage_tags
from e2i_pipelines.launcher.job_env import is_secret_name
from e2i_pipelines.launcher.step_inputs import step_tags
from e2i_pipelines.launcher.worker_exit import (
    OOM_EXIT_CODE,
    WORKER_MODULE,
    exit_line,
    exit_record,
    shell_exit_code,
)

_RUN_COMMANDS = {"execute_run", "resume_run"}


def _set_oom_score(value: int) -> None:
    """This process's ``oom_score_adj`` (best effort: lowering it needs privilege)."""
    try:
        with open("/proc/self/oom_score_adj", "w") as handle:
            handle.write(str(value))
    except OSError:
        pass


def _prefer_oom_kill() -> None:
    """In the child: be the first the OOM killer picks (raising the score needs no privilege)."""
    _set_oom_score(1000)


def _handle_signals(child: subprocess.Popen) -> None:
    """As PID 1 of a container (``docker stop``) pass SIGTERM/SIGINT on to the run worker; under
    Ray, which signals the whole process group, the child already has it: only wait."""
    forward = os.getpid() == 1

    def handler(signum: int, _frame: Any) -> None:
        if forward and child.poll() is None:
            child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def worker_env() -> dict[str, str]:
    """The run worker's environment: this process's, plus every secret the node gives only as a
    ``NAME_FILE`` file, read into ``NAME``. Raises RuntimeError naming the variable when a secret
    file cannot be read (never its content)."""
    env = dict(os.environ)
    export_file_secrets(env, secrets_dir=None, wanted=is_secret_name)
    return env


def run(argv: list[str]) -> int:
    """Run ``argv`` as the run worker; report and record its end; return the exit code to use."""
    if not argv:
        print(f"usage: python -m {WORKER_MODULE} COMMAND...", file=sys.stderr)
        return 2
    try:
        os.environ.update(worker_env())  # the child and record_on_run() reach the instance
    except RuntimeError as exc:
        print(f"e2i run worker: {exc}", file=sys.stderr, flush=True)
        return 1
    cgroup = own_memory_cgroup()
    before = cgroup.oom_kills() if cgroup else None
    meter = UsageMeter(cgroup, own_cpu_cgroup())
    _set_oom_score(-500)  # the wrapper's report should survive the kill
    started = time.monotonic()
    child = subprocess.Popen(argv, preexec_fn=_prefer_oom_kill)  # noqa: PLW1509 - sets a score only
    _handle_signals(child)
    code = child.wait()
    usage = meter.read(time.monotonic() - started)
    after = cgroup.oom_kills() if cgroup else None
    oom_kills = (after - before) if before is not None and after is not None else None
    record = {**exit_record(code, oom_kills, cgroup), **usage.as_record()}
    print(exit_line(record), flush=True)
    record_on_run(argv, record, usage)
    if oom_kills:
        return OOM_EXIT_CODE
    return shell_exit_code(code)


def run_args(argv: list[str]) -> Any | None:
    """The ExecuteRunArgs/ResumeRunArgs of a ``dagster api execute_run|resume_run`` command."""
    if len(argv) < 4 or argv[1] != "api" or argv[2] not in _RUN_COMMANDS:
        return None
    from dagster._grpc.types import ExecuteRunArgs, ResumeRunArgs  # registers them for serdes
    from dagster._serdes import deserialize_value

    try:
        return deserialize_value(argv[-1], (ExecuteRunArgs, ResumeRunArgs))
    except Exception:  # noqa: BLE001 - not a serialized args payload
        return None


def record_on_run(argv: list[str], record: dict[str, Any], usage: Usage | None = None) -> None:
    """Put ``usage`` and then ``record`` on the run through its instance and launcher (best
    effort: the exit code and run monitoring still report a worker that cannot reach the
    instance)."""
    args = run_args(argv)
    if args is None or getattr(args, "instance_ref", None) is None:
        return
    try:
        from dagster import DagsterInstance

        from e2i_pipelines.launcher.tiered import TieredLauncherMixin

        with DagsterInstance.from_ref(args.instance_ref) as instance:
            run = instance.get_run_by_id(args.run_id)
            launcher = instance.run_launcher
            if run is None:
                return
            if usage is not None:  # before the exit record: once that is there, usage is too
                tags = usage_tags(usage, *run_budget(run, launcher, record))
                instance.add_run_tags(run.run_id, {**tags, **step_tags(instance, run.run_id)})
            if not isinstance(launcher, TieredLauncherMixin):
                return
            diagnosis = launcher.record_worker_exit(run, record)
            if diagnosis is not None:
                print(f"e2i run worker: {diagnosis.message}", flush=True)
    except Exception as exc:  # noqa: BLE001 - never hide the run's own exit code
        print(f"e2i run worker: could not record the exit on run {args.run_id}: {exc}",
              file=sys.stderr, flush=True)


def run_budget(run: Any, launcher: Any, record: dict[str, Any]) -> tuple[float | None, int | None]:
    """(CPUs, memory bytes) the run is billed for: its tier's profile under a tiered launcher,
    else the CPUs this worker may use and its cgroup's memory limit."""
    from e2i_pipelines.launcher.tiered import TieredLauncherMixin
    from e2i_pipelines.tiers import parse_bytes

    if isinstance(launcher, TieredLauncherMixin):
        _, profile = launcher.run_tier(run)
        return float(profile.cpus), parse_bytes(profile.memory)
    return float(len(os.sched_getaffinity(0))), record.get("memory_limit_bytes")


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
