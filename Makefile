# `make test` and `make demo` do all set-up on a fresh machine first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup sysdeps test lint demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

setup: $(STAMP) sysdeps

# pdsh and sshd drive the two-"node" loopback tests; installed only when we are root.
sysdeps:
	@if ! command -v pdsh >/dev/null || ! test -x /usr/sbin/sshd; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pdsh openssh-server openssh-client >/dev/null; \
	  else echo "note: pdsh/sshd missing and not root: multi-node tests will skip"; fi; \
	fi

test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -rs

lint: setup
	$(BIN)/ruff check .

demo: setup
	$(BIN)/medtrain demo --workdir demo_work

clean:
	rm -rf $(VENV) demo_work runs
