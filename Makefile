# strapi-webhook-operator — every target is safe to run on a fresh clone.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help generate lint test test-unit e2e deploy-manifests check-chart image check-image bench demo

help: ## List the targets.
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

generate: ## Write the CRDs generated from src/api to crds/ and the Helm chart's crds/.
	$(CARGO) run --quiet -- crd --output-dir crds
	rm -f charts/strapi-webhook-operator/crds/*.yaml && cp crds/*.yaml charts/strapi-webhook-operator/crds/

deploy-manifests: ## Render deploy/ (for `kubectl apply -k deploy/`) from the Helm chart.
	scripts/ensure-chart-tools.sh
	scripts/render-deploy.sh deploy

check-chart: ## Lint and render the Helm chart, validate every object, check deploy/ is in sync.
	scripts/ensure-chart-tools.sh
	scripts/check-chart.sh

image: ## Build the OCI image offline (static musl binary, FROM scratch) into target/image/strapi-webhook-operator.oci.tar.
	scripts/ensure-image-tools.sh
	scripts/build-image.sh

check-image: ## Run the image's checks inside its root filesystem as the chart runs it (needs root and `make image`).
	scripts/check-image.sh

lint: ## Check formatting and run clippy with warnings as errors.
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

demo: ## Run the whole product locally against a fresh Strapi and show every sink receiving its calls.
	scripts/demo.sh

test: ## Install what the tests need (idempotent), then run lint and the whole test suite.
	scripts/test.sh

test-unit: ## Run the Rust tests only, assuming the test tools are installed.
	$(CARGO) nextest run --no-fail-fast

e2e: ## Run the end-to-end suite against the cluster in KUBECONFIG (controller and receiver run locally).
	@if [ -z "$$KUBECONFIG" ]; then \
	  echo "e2e: SKIPPED — set KUBECONFIG to a cluster (kind, k3d, or a bare kube-apiserver) to run it"; \
	else \
	  scripts/ensure-strapi-app.sh && \
	  scripts/with-strapi.sh $(CARGO) nextest run --test e2e --run-ignored only --no-capture; \
	fi

# Benchmarks stay out of `make test`: they take minutes and their numbers are for reading.
bench: ## Run the benchmarks against same-run baselines; summary in target/bench/summary.md.
	scripts/bench.sh
