"""Research code: attacks' evaluation, demo data and training, the frontier, benchmarks and the
reader's fuzzer. The product (everything else under `pipeline`) never imports it."""
