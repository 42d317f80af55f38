"""The one wait-then-cancel step of ``terminate()`` (Docker and Ray), on a real ephemeral instance."""

import threading
import time

import dagster as dg
import pytest
from dagster._core.storage.dagster_run import DagsterRun, DagsterRunStatus

from e2i_pipelines.launcher.tiered import TieredLauncherMixin

MESSAGE = "Run container stopped on a terminate request."


class _Launcher(TieredLauncherMixin):
    def __init__(self, instance: dg.DagsterInstance) -> None:
        self._instance = instance


@pytest.fixture
def instance():
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


def _started_run(instance: dg.DagsterInstance) -> str:
    run = instance.add_run(DagsterRun(job_name="probe_light_job", status=DagsterRunStatus.STARTED))
    return run.run_id


def _canceled_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [entry.message for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_CANCELED)]


def test_unfinished_run_is_canceled_once_its_worker_is_gone(instance):
    run_id = _started_run(instance)
    started = time.monotonic()
    _Launcher(instance).cancel_unless_finished(run_id, MESSAGE, timeout=30.0, settled=lambda run: True)
    assert time.monotonic() - started < 5.0  # settled at once: no waiting for the timeout
    assert instance.get_run_by_id(run_id).status == DagsterRunStatus.CANCELED
    assert _canceled_messages(instance, run_id) == [MESSAGE]


def test_run_the_worker_finished_is_left_alone(instance):
    run_id = _started_run(instance)
    instance.report_run_failed(instance.get_run_by_id(run_id), message="worker said so")
    _Launcher(instance).cancel_unless_finished(run_id, MESSAGE, timeout=5.0, settled=lambda run: True)
    assert instance.get_run_by_id(run_id).status == DagsterRunStatus.FAILURE
    assert _canceled_messages(instance, run_id) == []


def test_waits_for_the_worker_and_does_not_cancel_what_it_finished(instance):
    run_id = _started_run(instance)

    def worker_reports_cancel() -> None:
        time.sleep(1.0)
        instance.report_run_canceled(instance.get_run_by_id(run_id), message="worker canceled")

    thread = threading.Thread(target=worker_reports_cancel)
    thread.start()
    _Launcher(instance).cancel_unless_finished(run_id, MESSAGE, timeout=10.0,
                                               settled=lambda run: run.is_finished)
    thread.join()
    assert _canceled_messages(instance, run_id) == ["worker canceled"]


def test_gives_up_after_the_timeout_and_cancels(instance):
    run_id = _started_run(instance)
    started = time.monotonic()
    _Launcher(instance).cancel_unless_finished(run_id, MESSAGE, timeout=1.5, settled=lambda run: False)
    assert 1.5 <= time.monotonic() - started < 10.0
    assert _canceled_messages(instance, run_id) == [MESSAGE]


def test_unknown_run_is_a_no_op(instance):
    _Launcher(instance).cancel_unless_finished("no-such-run", MESSAGE, timeout=1.0,
                                               settled=lambda run: False)
