# One entry point for set-up, serving and tests. Every target sets itself up.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROTO  := proto/modelcache/v1/modelcache.proto
GEN    := modelcache_svc/_gen/modelcache/v1/modelcache_pb2.py
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup proto run test test-tools bench eval models clean

setup: $(STAMP) $(GEN)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first and pinned: the CPU build on disk, never a CUDA download
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

proto: $(GEN)

# Generated stubs live in modelcache_svc/_gen (ignored by git); the virtual
# include path makes their imports absolute inside our package.
$(GEN): $(PROTO) $(STAMP)
	$(PY) -m grpc_tools.protoc -Imodelcache_svc/_gen=proto \
		--python_out=. --pyi_out=. --grpc_python_out=. \
		modelcache_svc/_gen/modelcache/v1/modelcache.proto

run: setup
	$(VENV)/bin/modelcache-svc serve $(ARGS)

# Tools the tests drive from Debian: redis-cli (a real Redis client), docker-compose (validates
# deploy/docker-compose.yml; needs no Docker engine). Best effort: skipped
# tests say why when it is missing and cannot be installed.
test-tools:
	@command -v redis-cli >/dev/null || (command -v apt-get >/dev/null && apt-get install -y -q redis-tools >/dev/null) || true
	@command -v docker-compose >/dev/null || (command -v apt-get >/dev/null && apt-get install -y -q docker-compose >/dev/null) || true

test: setup test-tools
	$(PY) -m pytest -q $(ARGS)

# The cache-tuned models in modelcache_svc/models/, rebuilt from ../shared/train (never ../shared/eval):
# the English default fine-tuned from all-MiniLM-L6-v2 on QQP's training pairs (CoSENT, one epoch, seed 0,
# weights in fp16), and the similarity scale of multilingual-e5-small (the CJK model) fitted on LCQMC's
# training split. About an hour on 2 cores (docs/hit-quality.md, "Models tuned for caching").
TRAIN ?= ../shared/train
models: setup
	$(VENV)/bin/modelcache-svc train --pairs $(TRAIN)/qqp_train_en.jsonl --out modelcache_svc/models/minilm-cache-en \
		--epochs 1 --lr 3e-5 --max-seq-length 64 --threads 1 --seed 0 --half
	$(VENV)/bin/modelcache-svc train --fit-scale-only --base packaged:multilingual-e5-small \
		--pairs $(TRAIN)/lcqmc_valid_zh.jsonl --holdout 4000 --out modelcache_svc/models/multilingual-e5-small

clean:
	rm -rf $(VENV) modelcache_svc/_gen data
