# The two quick-start commands are `make run` and `make test`; each installs what it needs.
UV := ./scripts/uv
export UV_PYTHON_DOWNLOADS := never

.PHONY: run test test-sqlite test-postgres lint bench bench-phone

run:
	$(UV) run photodrop serve

lint:
	$(UV) run ruff check photodrop tests bench
	$(UV) run ruff format --check photodrop tests bench
	$(UV) run mypy

# The suite runs twice, both legs at once (much of each is waiting on sockets and subprocesses): on
# the embedded set-up and on the scale-out one (PostgreSQL, Redis and S3 staging; see "Testing" in
# README.md). Either leg runs alone as test-sqlite or test-postgres; each prints its own report.
test: lint
	./scripts/ensure-chromium
	[ -d node_modules/azurite ] || npm ci --silent --no-audit --no-fund
	$(MAKE) -j2 --output-sync=target test-sqlite test-postgres

test-sqlite:
	PHOTODROP_TEST_ENGINE=sqlite $(UV) run pytest

test-postgres:
	PHOTODROP_TEST_ENGINE=postgres $(UV) run pytest

# Every bench runs even when one fails; then the failures are named and make exits non-zero, so a
# bench that cannot start (a server that never comes up) is never mistaken for one that ran.
BENCHES := ingest create_sessions delivery subscriptions scale_out downscale
bench:
	@failed=""; for name in $(BENCHES); do \
		echo "== bench/$$name.py"; \
		$(UV) run python bench/$$name.py || failed="$$failed bench/$$name.py"; \
	done; \
	if [ -n "$$failed" ]; then echo "make bench: FAILED:$$failed (see the errors above)" >&2; exit 1; fi

# The phone page on emulated slow 3G with one 20 s cut, in a real Chromium: minutes, so on its own.
bench-phone:
	$(UV) run python bench/phone_slow3g.py
