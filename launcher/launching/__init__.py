"""From a LaunchSpec to a running, supervised server and back to stopped, as a small library: each module one job.

- prepare: validate, plan (the estimate, beside the launches already here), build the exact command line;
- records: launch.json, and the server's environment rebuilt from it;
- start: supervise in this process (foreground, or a thread: `inprocess.Launch`), detach a supervisor, adopt;
- status: the state the records and the live processes say, waiting for one;
- stop: stop a launch and sweep what is left of it;
- inprocess: a launch held by a long-running process (the gateway): start, wait for ready, stop, adopt.
`launcher launch`, smoke, bench, tune and the gateway all go through these."""
from .prepare import SUPERVISOR_TAG_ENV, Prepared, default_port, graph_budget, prepare
from .records import env_from_record, policy_for, record_launch
from .start import adopt, run_foreground, server_run, start_detached, supervise_from_record
from .status import effective_state, unsupervised_note, wait_until
from .stop import stop

__all__ = ["SUPERVISOR_TAG_ENV", "Prepared", "adopt", "default_port", "effective_state", "env_from_record",
           "graph_budget", "policy_for", "prepare", "record_launch", "run_foreground", "server_run", "start_detached",
           "stop", "supervise_from_record", "unsupervised_note", "wait_until"]
