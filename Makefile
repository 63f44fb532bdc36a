# Quick start: `make demo` runs the bank demo on the embedded default, `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck proto bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/shush demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(MAKE) typecheck
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(MAKE) typecheck

# The checkout's own folder name need not be a valid module name (CI clones into any folder),
# so mypy sees the package as `shush` through a link, as the installed import root does.
typecheck: $(STAMP)
	mkdir -p $(VENV)/src && ln -sfn "$(CURDIR)" $(VENV)/src/shush
	cd $(VENV)/src && "$(CURDIR)/$(BIN)/mypy" --config-file "$(CURDIR)/pyproject.toml" \
		-p shush.engine -p shush.policies

proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iadapters/grpc --python_out=adapters/grpc \
		--grpc_python_out=adapters/grpc adapters/grpc/shush.proto
	sed -i 's/^import shush_pb2 as/from . import shush_pb2 as/' adapters/grpc/shush_pb2_grpc.py

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_spine.py

clean:
	rm -rf $(VENV) .shush .pytest_cache
