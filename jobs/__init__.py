"""User-facing jobs: each module parses its arguments and calls the library; `cli` dispatches."""
