# agentserve developer entry points. Every target installs into .venv first (deploy/install.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALL := deploy/install.sh $(VENV) dev

.PHONY: install run test check lint typecheck proto proto-check learning bench-learning bench-cliff bench-bandits bench-masking bench-sb3 bench-report bench-serving bench-breakdown bench-gpu bundle image image-cuda clean

install:
	@$(INSTALL)

## Serve the bundled policies, drive them with the bundled simulator, print returns and metrics.
run: install
	$(VENV)/bin/agentserve demo

## The default test suite (what CI runs).
test: install proto-check check
	$(PY) -m pytest -q

## Lint (ruff; bandit: high-severity security findings), format check and type check.
check: lint typecheck

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/bandit -q -r agentserve service trainer -lll

typecheck: install
	$(VENV)/bin/mypy

## Regenerate the gRPC code from protos/ with the pinned grpcio-tools.
proto: install
	$(PY) scripts/gen_protos.py

proto-check: install
	$(PY) scripts/gen_protos.py --check

## Slow learning checks (reference returns over several seeds).
learning: install
	$(PY) -m pytest -q -m slow tests/learning

## Benchmarks store their results in docs/results/*.json and re-render docs/benchmarks.md.
## Extra arguments: make bench-learning ARGS='--only "ppo on CartPole" --jobs 2'.
ARGS ?=

## Every reference row over its seeds (hours on two cores; merged row by row and seed by seed).
bench-learning: install
	$(VENV)/bin/agentserve benchmark reference $(ARGS)

## SARSA against Q-learning on the cliff walk (Sutton & Barto Example 6.6); also docs/cliff-walking.md + PNG.
bench-cliff: install
	$(PY) benchmarks/cliff_walking.py $(ARGS)

## Bandits on the 10-armed testbed (Sutton & Barto figures 2.2, 2.4); also docs/bandits.md + PNGs.
bench-bandits: install
	$(PY) benchmarks/bandits.py $(ARGS)

## Masked against unmasked PPO on the bundled maze (about 3 minutes); docs/masked-training.md + PNG.
bench-masking: install
	$(PY) -m trainer.masking_benchmark $(ARGS)

## Training speed side by side with Stable-Baselines3 (same presets, seeds, machine, interleaved; about 30 minutes).
bench-sb3: install
	$(VENV)/bin/agentserve benchmark speed --seeds 10 $(ARGS)

## docs/benchmarks.md from the stored results only (no training).
bench-report: install
	$(VENV)/bin/agentserve benchmark report

## Our server against a bare gRPC echo server (about 4 to 5 minutes, hot reload included); docs/serving-benchmark.md.
bench-serving: install
	$(VENV)/bin/agentserve bench $(ARGS)

## Where the latency of one Act call goes, stage by stage, against the echo server (about 2.5 minutes); docs/serving-breakdown.md.
bench-breakdown: install
	$(VENV)/bin/agentserve bench --breakdown $(ARGS)

## The GPU target: torch on CUDA against the CPU runtimes, ActBatch of 4,096 (needs CUDA; about 3 minutes
## on 16 cores); docs/serving-gpu.md. On a lent GPU machine: scripts/device_gpu_check.sh.
bench-gpu: install
	$(VENV)/bin/agentserve bench --gpu $(ARGS)

## Retrain the bundled default model repository (service/default_models).
bundle: install
	$(PY) scripts/build_default_models.py

## The serving image (Dockerfile; needs a Docker engine): CPU, and the CUDA variant.
image:
	docker build -t agentserve:cpu .

image-cuda:
	docker build --build-arg VARIANT=cuda -t agentserve:cuda .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache runs
