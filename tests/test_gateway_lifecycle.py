"""A model's lifecycle in the gateway, move by move: the table, the supervisor's states followed, faults."""
import pytest

from launcher.runs import RunState
from launcher.gateway.lifecycle import MOVES, IllegalMove, Lifecycle, Phase


def walk(*moves):
    life, seen = Lifecycle("m"), []
    life.on_move = lambda old, new, why: seen.append((old.value, new.value))
    for i, m in enumerate(moves):
        life.move(m, f"step {i}", float(i))
    return life, seen


def test_the_ordinary_life_start_sleep_wake_stop():
    life, seen = walk(Phase.STARTING, Phase.RUNNING, Phase.SLEEPING, Phase.RUNNING, Phase.STOPPING, Phase.STOPPED)
    assert seen == [("stopped", "starting"), ("starting", "running"), ("running", "sleeping"),
                    ("sleeping", "running"), ("running", "stopping"), ("stopping", "stopped")]
    assert life.history[-1][1:] == ("stopping", "stopped", "step 5")


@pytest.mark.parametrize("frm,to", [(f, t) for f in Phase for t in Phase if t != f and t not in MOVES[f]])
def test_every_move_outside_the_table_is_refused(frm, to):
    life = Lifecycle("m", phase=frm)
    with pytest.raises(IllegalMove):
        life.move(to, "no", 0.0)
    assert life.phase == frm


def test_a_fatal_supervisor_makes_the_model_failed_with_its_reason_then_a_retry_after_the_window():
    life, _ = walk(Phase.STARTING, Phase.RUNNING)
    life.follow(RunState.FATAL, "server killed by SIGKILL (3 failures in a row, giving up)", alive=False, now=10.0)
    assert life.phase == Phase.FAILED and "giving up" in life.cause and life.failed_at == 10.0
    assert not life.retry_due(20.0, 30.0) and life.retry_due(40.0, 30.0)
    life.move(Phase.STARTING, "a request after the retry window", 41.0)
    assert life.cause is None


def test_backoff_of_a_running_model_is_restarting_and_ready_again_is_running():
    life, _ = walk(Phase.STARTING, Phase.RUNNING)
    life.follow(RunState.BACKOFF, "server killed by SIGKILL after ready", alive=True, now=5.0)
    assert life.phase == Phase.RESTARTING
    life.follow(RunState.STARTING, "", alive=True, now=6.0)
    assert life.phase == Phase.RESTARTING
    life.follow(RunState.READY, "", alive=True, now=9.0)
    assert life.phase == Phase.RUNNING


def test_a_supervision_that_ends_unasked_is_a_failure_and_the_gateways_own_stop_is_not():
    life, _ = walk(Phase.STARTING, Phase.RUNNING)
    life.follow(RunState.STOPPED, "", alive=False, now=3.0)
    assert life.phase == Phase.FAILED and "ended" in life.cause
    life, _ = walk(Phase.STARTING, Phase.RUNNING, Phase.STOPPING)
    life.follow(RunState.STOPPED, "", alive=False, now=3.0)
    assert life.phase == Phase.STOPPING  # the gateway asked: it moves to stopped itself


def test_a_start_still_under_way_is_not_taken_for_ready_by_following():
    life, _ = walk(Phase.STARTING)
    life.follow(RunState.STARTING, "", alive=True, now=1.0)
    life.follow(RunState.READY, "", alive=True, now=2.0)  # the start's own code moves it (after its checks), not follow
    assert life.phase == Phase.STARTING
    life.follow(RunState.FATAL, "port in use", alive=False, now=3.0)
    assert life.phase == Phase.FAILED
