# The two quick-start commands are `make run` and `make test`; each installs what it needs.
UV := ./scripts/uv
export UV_PYTHON_DOWNLOADS := never

.PHONY: run test lint bench

run:
	$(UV) run photodrop serve

lint:
	$(UV) run ruff check photodrop tests bench
	$(UV) run ruff format --check photodrop tests bench
	$(UV) run mypy

test: lint
	./scripts/ensure-chromium
	[ -d node_modules/azurite ] || npm ci --silent --no-audit --no-fund
	$(UV) run pytest

bench:
	$(UV) run python bench/ingest.py
	$(UV) run python bench/create_sessions.py
	$(UV) run python bench/delivery.py
	$(UV) run python bench/subscriptions.py
