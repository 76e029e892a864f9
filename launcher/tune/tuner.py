"""The decision loop of a tune: the defaults, the proposals within the budget, the defaults again where beaten."""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..workloads import Named
from .measure import StartMeasurer
from .propose import combine, default_estimate, propose
from .results import MIN_GAIN, Candidate, TuneResult, TuneStore, workload_key

if TYPE_CHECKING:
    from ..launching.prepare import Fetch
    from ..spec import LaunchSpec
    from .results import Say


class Tuner:
    """The decision loop: the defaults, the proposed candidates (each measured by StartMeasurer within the
    budget), the defaults again where a candidate beat them, saving results (TuneStore) as it goes."""

    def __init__(self, base_spec: LaunchSpec, workloads: list[Named], *, vocab_size: int, timeout_s: float = 900.0,
                 budget_s: float | None = None, results_path: Path | None = None, resume: bool = False,
                 grid: list[Candidate] | None = None, on_progress: Say | None = None, api_key: str | None = None,
                 min_gain: float = MIN_GAIN, confirm: bool = True, refine: int = 2, fetch: Fetch | None = None,
                 allow_fp8_kv: bool = False) -> None:
        self.spec, self.workloads, self.budget_s = base_spec, workloads, budget_s
        self.grid, self.on_progress = grid, on_progress
        self.res = TuneResult(workloads, budget_s=budget_s, min_gain=min_gain)
        self.confirm, self.allow_fp8_kv = confirm, allow_fp8_kv
        self._said_no_confirm = False
        self.t0 = time.monotonic()
        key = {"model": [base_spec.model_path, base_spec.model_name, base_spec.size_in_billions, base_spec.model,
                         base_spec.revision], "engine_args": base_spec.engine_args, "workloads": workload_key(workloads)}
        self.store = TuneStore(results_path, key, self._say)
        # fetch: downloads a Hub model once, before the first start (launching.prepare)
        self.starts = StartMeasurer(base_spec, workloads, vocab_size=vocab_size, timeout_s=timeout_s, api_key=api_key,
                                    refine=refine, fetch=fetch, say=self._say)
        self.previous: list[Candidate] = self.store.load() if resume else []

    def save(self) -> None:
        """The results so far, with the time spent."""
        self.res.elapsed_s = time.monotonic() - self.t0
        self.store.save(self.res)

    def _say(self, msg: str) -> None:
        if self.on_progress:
            self.on_progress(msg)

    def run(self) -> TuneResult:
        """The whole tune: the defaults, the proposals, their combinations, the defaults again where beaten."""
        defaults = self.measure(Candidate("vLLM defaults", {}, why="the baseline"))
        if defaults.ran:
            cands = self.grid if self.grid is not None else propose(
                self.workloads, defaults, self.spec, default_estimate(self.spec), allow_fp8_kv=self.allow_fp8_kv,
                min_gain=self.min_gain)
            for c in cands:
                self.measure(c)
                self.confirm_defaults()  # as soon as a candidate beats them: the gain is checked before the budget goes
            if self.grid is None:
                for c in combine(self.res, self.workloads, self.min_gain):
                    self.measure(c)
            self.confirm_defaults()
        self.save()
        return self.res

    @property
    def min_gain(self) -> float:
        """The gain over the defaults a candidate needs to win."""
        return self.res.min_gain

    def confirm_defaults(self) -> None:
        """Where a candidate beats the defaults, start the defaults once more (at once, before the other
        candidates) and keep their better score, so that a gain is not an accident of one start."""
        if not self.confirm or self.res.defaults_again is not None:
            return
        if not any(w is not None and w.engine_args for w in map(self.res.winner, self.workloads)):
            return
        c = Candidate("vLLM defaults (again)", {}, why="check: a candidate beat the defaults")
        old = next((x for x in self.previous if x.label == c.label), None)
        if old is not None:
            old.resumed = True
            self.res.defaults_again = old
            return
        over = self._over_budget()
        if over:
            if not self._said_no_confirm:
                self._say(f"{c.label}: not run: {over[1]:.0f} s of the budget left; the gain rests on one start")
                self._said_no_confirm = True
            return
        self.res.defaults_again = c
        self._run_one(c)
        self.save()

    def measure(self, c: Candidate) -> Candidate:
        """Measure the candidate once (a duplicate is skipped, a measurement of --resume reused), unless one more
        start would overrun the budget."""
        if any(x.engine_args == c.engine_args for x in self.res.candidates):
            return c
        self.res.candidates.append(c)
        old = next((x for x in self.previous if x.engine_args == c.engine_args and x.label == c.label), None)
        if old is not None:
            old.resumed, old.why = True, c.why or old.why
            self.res.candidates[-1] = old
            self._say(f"{old.label}: measured before, reused from {self.store.path}")
            return old
        over = self._over_budget() if c.engine_args else None
        if over:
            c.skipped = f"not run: {over[1]:.0f} s of the budget left, a candidate takes about {over[0]:.0f} s"
            self._say(f"{c.label}: {c.skipped}")
            self.save()
            return c
        self._run_one(c)
        self.save()
        return c

    def _run_one(self, c: Candidate) -> None:
        """One start for the candidate (the defaults' second start named after the count so far)."""
        self.starts.run(c, len(self.res.candidates) - (0 if c is self.res.defaults_again else 1))

    def _over_budget(self) -> tuple[float, float] | None:
        """(expected cost, seconds left) when one more start would not finish within the budget."""
        cost = self.expected_cost() if self.budget_s is not None else None
        left = self.budget_s - (time.monotonic() - self.t0) if self.budget_s is not None else 0.0
        return (cost, left) if cost is not None and cost > left else None

    def expected_cost(self) -> float | None:
        """Mean start + sweep time of the starts measured in this run (the defaults' second start included);
        of the resumed ones where none is measured yet, rather than no bound at all."""
        cands = self.res.candidates + ([self.res.defaults_again] if self.res.defaults_again else [])
        timed = [c for c in cands if c.ran and c.start_s is not None]
        ran = [c for c in timed if not c.resumed] or timed
        if not ran:
            return None
        return statistics.fmean(c.start_s for c in ran) + statistics.fmean(c.sweep_s or 0 for c in ran) + 10
