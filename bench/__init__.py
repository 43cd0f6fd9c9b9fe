"""Benchmark of otp-service as users run it: the real service process, driven over HTTP.

Run ``python -m bench`` from the repository root (``--help`` for options; bench/README.md for
what is measured and how to add a scenario). Not a test, and not shipped: the wheel holds
``otp_service`` only. Kept free of imports, so ``python -m bench.loadgen`` starts light.
"""
