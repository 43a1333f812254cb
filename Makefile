# The two commands a new user needs: `make demo` and `make test`.
# Both create the virtual environment and install the project on first use.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test test-unit lint format venv kafka-up kafka-down clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: venv
	$(BIN)/rnnrec demo

# Starts the local broker (unless KAFKA_BOOTSTRAP_SERVERS names one), runs every
# test, and stops the broker again if this run started it.
test: venv
	@started=0; \
	if [ -z "$$KAFKA_BOOTSTRAP_SERVERS$$RNNREC_KAFKA_BOOTSTRAP_SERVERS" ] && ! $(BIN)/rnnrec kafka status >/dev/null 2>&1; then \
		$(BIN)/rnnrec kafka up || exit 1; started=1; \
	fi; \
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$started = 1 ]; then $(BIN)/rnnrec kafka down >/dev/null; fi; \
	exit $$rc

test-unit: venv
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

kafka-up: venv
	$(BIN)/rnnrec kafka up

kafka-down: venv
	$(BIN)/rnnrec kafka down

# Offline checks of the Dockerfile and deploy/: render the kustomize overlays, validate
# them against the Kubernetes schemas, checkov, hadolint (tools cached in .cache/).
.PHONY: deploy-check
deploy-check:
	bash deploy/validate.sh

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
