"""Named workloads for `launcher tune` (and `launcher bench --workload`): what the traffic looks like and
what it is judged on.

Each is a `bench.Workload` (lengths, shared prefixes, turns), the load levels swept on one engine start
(concurrency: requests, or sessions for multi-turn), and a target: the highest output throughput among
the load levels that meet the latency target (p99 time to first token), or simply the highest output
throughput where there is no latency target (batch).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from .bench import Workload
from .errors import BadInput


@dataclass(frozen=True)
class Named:
    name: str
    about: str
    workload: Workload
    levels: tuple[int, ...]  # concurrency levels swept on one start, ascending
    slo_ttft_p99_s: float | None  # None: throughput only

    def describe(self) -> str:
        w = self.workload
        parts = [f"prompts {_r(w.prompt_len)}", f"answers {_r(w.output_len)}"]
        if w.prefix_len[1]:
            parts.insert(0, f"{w.num_prefixes} shared prefix(es) of {_r(w.prefix_len)}")
        if w.turns > 1:
            parts.append(f"{w.turns} turns per session")
        target = f"p99 TTFT <= {self.slo_ttft_p99_s:g} s" if self.slo_ttft_p99_s else "output throughput"
        return f"{self.about}: " + ", ".join(parts) + f" tokens; concurrency {','.join(map(str, self.levels))}; target {target}"


def _r(r: tuple[int, int]) -> str:
    return str(r[0]) if r[0] == r[1] else f"{r[0]}-{r[1]}"


PRESETS: dict[str, Named] = {
    "chat": Named("chat", "short prompts, streamed answers",
                  Workload(num_requests=200, prompt_len=(64, 512), output_len=(64, 384)),
                  levels=(32, 128, 256), slo_ttft_p99_s=0.5),
    "rag": Named("rag", "long prompts built on a few documents, short answers",
                 Workload(num_requests=64, prefix_len=(3840, 7680), num_prefixes=32, prompt_len=(32, 256),
                          output_len=(32, 128)),
                 levels=(4, 16, 64), slo_ttft_p99_s=2.0),
    "batch": Named("batch", "offline throughput, no latency target",
                   Workload(num_requests=600, prompt_len=(256, 1024), output_len=(128, 512)),
                   levels=(600,), slo_ttft_p99_s=None),
    "agent": Named("agent", "multi-turn sessions on a shared system prompt",
                   Workload(num_requests=300, prefix_len=(2048, 2048), num_prefixes=1, turns=5, prompt_len=(64, 384),
                            output_len=(32, 256)),
                   levels=(8, 32, 64), slo_ttft_p99_s=1.0),
}


def named(names: str | list[str], *, num_requests: int | None = None, levels: list[int] | None = None,
          prompt_len: tuple[int, int] | None = None, output_len: tuple[int, int] | None = None,
          prefix_len: tuple[int, int] | None = None, slo_ttft_p99_s: float | None = None,
          seed: int = 0) -> list[Named]:
    """The named workloads asked for, with the user's overrides applied to each."""
    out = []
    for n in [x.strip() for x in (names.split(",") if isinstance(names, str) else names) if x.strip()]:
        if n not in PRESETS:
            raise BadInput(f"unknown workload '{n}'.", hint="Workloads: " + ", ".join(PRESETS) + ".")
        p = PRESETS[n]
        w = p.workload
        changes: dict = {"seed": seed}
        if num_requests:
            changes["num_requests"] = num_requests
        if prompt_len:
            changes["prompt_len"] = prompt_len
        if output_len:
            changes["output_len"] = output_len
        if prefix_len is not None and w.prefix_len[1]:
            changes["prefix_len"] = prefix_len
        w = replace(w, **changes)
        lv = tuple(sorted(set(levels))) if levels else p.levels
        if p.name == "batch" and not levels:
            lv = (w.num_requests,)  # offline: everything submitted at once
        if any(x < 1 for x in lv):
            raise BadInput("--concurrency-levels must be positive integers.")
        out.append(replace(p, workload=replace(w, concurrency=max(lv)).validate(), levels=lv,
                           slo_ttft_p99_s=slo_ttft_p99_s if slo_ttft_p99_s is not None and p.slo_ttft_p99_s else
                           p.slo_ttft_p99_s))
    if not out:
        raise BadInput("give at least one workload.", hint="Workloads: " + ", ".join(PRESETS) + ".")
    if len({x.name for x in out}) != len(out):
        raise BadInput("each workload may be named once.")
    return out


def at_level(n: Named, concurrency: int, index: int) -> Workload:
    """The workload at one load level. Each level gets its own prompts (seed), so a level does not find
    the previous level's documents in the prefix cache; the number of requests grows with the level (two
    per slot at least) so that every level runs long enough at its concurrency."""
    w = n.workload
    reqs = max(w.num_requests, 2 * concurrency * w.turns) if n.name != "batch" else w.num_requests
    return replace(w, concurrency=concurrency, num_requests=reqs, seed=w.seed + 1000 * (index + 1))


def check_fits(w: Workload, max_model_len: int | None) -> None:
    """Refused (exit 2) before any request is sent where the workload's longest sequence (shared prefix, prompts
    and answers over its turns) is past the server's max_model_len: vLLM would answer each such request 400. Names
    the named workloads that fit. Prompts from a file are not checked here (their lengths are the file's)."""
    if not max_model_len or w.prompts_file:
        return
    need = w.max_seq_len()
    if need <= max_model_len:
        return
    fits = [n for n, p in PRESETS.items() if p.workload.max_seq_len() <= max_model_len]
    raise BadInput(f"this workload reaches {need} tokens in one request (prefix + prompt + answer"
                   f"{' over ' + str(w.turns) + ' turns' if w.turns > 1 else ''}); the server takes at most "
                   f"{max_model_len} (its max_model_len).",
                   hint=(f"Named workloads that fit: {', '.join(fits)}. Or lower" if fits else "Lower")
                   + " --prompt-len/--output-len, or launch with a larger --max-model-len.")
