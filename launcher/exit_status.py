"""How a process ended, in words: an exit code, or the signal that killed it with what that signal usually means."""
from __future__ import annotations

import re
import signal

# What each signal a server dies from usually means, for the reason a user reads (FATAL, BACKOFF, a 503, a report)
MEANING = {
    signal.SIGILL: "illegal instruction: the CPU lacks, or the process has not enabled, an instruction the code used",
    signal.SIGKILL: "sent by a user, or by the kernel's out-of-memory killer (see `dmesg`)",
    signal.SIGSEGV: "segmentation fault: a crash in native code",
    signal.SIGBUS: "bus error: memory that cannot be read (shared memory full, a file truncated under a mapping)",
    signal.SIGABRT: "aborted by the process itself (a failed check in native code)",
    signal.SIGFPE: "arithmetic fault in native code",
    signal.SIGTERM: "terminated (SIGTERM)",
    signal.SIGINT: "interrupted (SIGINT)",
}


def describe(code: int | None) -> str:
    """'exited with code 1', or 'killed by SIGILL (illegal instruction: ...)' for a negative code (-N: signal N, as
    Python's subprocess and vLLM report it) or a shell's 128+N."""
    if code is None:
        return "exited (code unknown)"
    sig = -code if code < 0 else (code - 128 if 128 < code < 128 + 65 else None)
    if sig is None:
        return f"exited with code {code}"
    try:
        name = signal.Signals(sig).name
    except ValueError:
        return f"exited with code {code}"
    meaning = MEANING.get(signal.Signals(sig)) or (signal.strsignal(sig) or name).lower()
    return f"killed by {name} ({meaning}; exit code {code})"


_VLLM_DIED = re.compile(r"died unexpectedly \(exit code: (-?\d+)\)")


def explain_line(line: str) -> str:
    """A log line that reports a child's exit code ("Worker proc VllmWorker-0 died unexpectedly (exit code: -4)")
    with the signal said in words; other lines as they are."""
    m = _VLLM_DIED.search(line)
    if not m or int(m.group(1)) >= 0:
        return line
    return f"{line}: {describe(int(m.group(1)))}"
