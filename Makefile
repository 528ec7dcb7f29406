# strapi-webhook-operator — every target is safe to run on a fresh clone.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help generate lint test test-unit e2e

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

generate: ## Write the CRDs generated from src/api to crds/.
	$(CARGO) run --quiet -- crd --output-dir crds

lint: ## Check formatting and run clippy with warnings as errors.
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

test: ## Install what the tests need (idempotent), then run lint and the whole test suite.
	scripts/test.sh

test-unit: ## Run the Rust tests only, assuming the test tools are installed.
	$(CARGO) nextest run --no-fail-fast
