import signal
import subprocess
import sys

from conftest import wait_for
from launcher.process import ProcRef


def test_pid_is_checked_against_its_start_time_before_any_signal():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        real = ProcRef.of(p.pid)
        impostor = ProcRef(p.pid, real.create_time - 100.0)  # same PID, other start time: a recycled PID
        assert impostor.signal(signal.SIGKILL) is False
        assert p.poll() is None and real.alive()
        assert real.signal(signal.SIGKILL) is True
        wait_for(lambda: p.poll() is not None, 5, what="exit")
    finally:
        p.kill()
        p.wait()
