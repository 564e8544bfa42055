# `make test` and `make demo` do all set-up on a fresh machine first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup sysdeps links test test-fast lint demo clean gpu-kit gpu-rehearsal

# The editable install is setuptools' strict mode: a tree of links under build/ that static analysers and IDEs
# follow (docs/architecture.md, "Reading the code with tools"); `links` refreshes it when a module is added or
# removed. Inside the checkout, imports find the rooms through medtrain/__init__.py either way.
EDITABLE := --config-settings editable_mode=strict
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]' $(EDITABLE)
	# SwanLab 0.10 pins protobuf below 7, and sentencepiece's generated model code needs 7: SwanLab goes in after
	# the rest and protobuf 7 back over it (pip names the pin; SwanLab's offline logging works on 7, tested)
	$(BIN)/pip install -q 'swanlab>=0.6' && $(BIN)/pip install -q 'protobuf>=7' 2>&1 | grep -v "^ERROR: pip's\|swanlab .* requires protobuf" || true
	$(BIN)/python -c "import google.protobuf as p, sys; sys.exit(int(p.__version__.split('.')[0]) < 7)"
	touch $(STAMP)

links: $(STAMP)
	@git ls-files -co --exclude-standard medtrain core launch data_prep eval recipes | sort > $(VENV)/.files.new
	@cmp -s $(VENV)/.files.new $(VENV)/.files || { echo "refreshing the editable install's link tree"; \
	  $(BIN)/pip install -q --no-deps -e . $(EDITABLE) 2>/dev/null && mv $(VENV)/.files.new $(VENV)/.files; }
	@rm -f $(VENV)/.files.new

# transformers 4.46 beside the project's 5.x, tokenizers only (no torch): exports must load under both
TF4 := .tf4/.installed
$(TF4):
	test -x .tf4/bin/python || $(PYTHON) -m venv .tf4
	.tf4/bin/pip install -q transformers==4.46.3 sentencepiece protobuf
	touch $(TF4)

setup: $(STAMP) links $(TF4) sysdeps

# pdsh and sshd drive the two-"node" loopback tests, mpirun the Open MPI launch, slurm-wlm + munge the
# throwaway Slurm cluster; installed only when we are root.
sysdeps:
	@if ! command -v pdsh >/dev/null || ! test -x /usr/sbin/sshd || ! command -v mpirun >/dev/null \
	    || ! command -v sbatch >/dev/null || ! test -x /usr/sbin/munged; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pdsh openssh-server openssh-client openmpi-bin slurm-wlm munge >/dev/null; \
	  else echo "note: pdsh/sshd/mpirun/slurm missing and not root: multi-node, mpirun and slurm tests will skip"; fi; \
	fi

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -rs --durations=25

# the unit and integration tiers (no DeepSpeed launch, no cluster): the quick answer while iterating
test-fast: $(STAMP) links $(TF4)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -rs --durations=15 tests/unit tests/integration

lint: setup
	$(BIN)/ruff check .

demo: setup
	$(BIN)/medtrain demo --workdir demo_work

# the wheels and tokenizer the offline GPU machine needs, in .gpu/ (git-ignored, carried there); bench/README.md
gpu-kit: $(STAMP)
	PYTHON=$(BIN)/python bash bench/gpu/make_kit.sh
	$(BIN)/pip install -q --dry-run --no-index --no-deps --find-links .gpu/wheels --only-binary=:all: \
	  --python-version 3.12 --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
	  --target /tmp/medtrain-gpu-kit-check .gpu/wheels/*.whl && echo "gpu-kit: every wheel installs on cp312"

# the kit on an imitation of the device's software (Python 3.12, torch 2.11, transformers 5.17, offline, no
# ../shared): fails if any step before CUDA fails (bench/gpu/rehearse.sh); .ci/run runs it after make test
gpu-rehearsal: gpu-kit
	bash bench/gpu/rehearse.sh

clean:
	rm -rf $(VENV) .tf4 demo_work runs .gpu .rehearsal
