"""Research code: what measures or attacks the product, and the demo's data and training: attacks,
the demo data and its scraper pipelines, training the demo models and the robust witness, the demo
run, evaluation, the robustness frontier and the relaxed attack suite, benchmarks and the reader's
fuzzer. The product (everything else under `pipeline`) never imports it (tests/test_layout.py)."""
