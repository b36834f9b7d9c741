# The two commands a newcomer needs: `make demo` and `make test`.
.PHONY: demo test bench lint bootstrap clean-demo

bootstrap:
	@scripts/bootstrap.sh

## Generate a synthetic producer feed, ingest it through the Airflow DAG into the
## embedded index, print the summary and example searches. No servers needed.
demo: bootstrap
	@scripts/demo.sh

## The whole test suite, with the real Elasticsearch node and S3 server it needs.
test: bootstrap
	@scripts/test.sh

## Benchmarks (figures as per-core rates and ratios; see README).
bench: bootstrap
	@.venv/bin/python -m benchmarks.run

lint:
	@.venv/bin/ruff check pipeline parsers dags tests && .venv/bin/ruff format --check pipeline parsers dags tests generator benchmarks scripts && .venv/bin/mypy

clean-demo:
	rm -rf .carnet/demo
