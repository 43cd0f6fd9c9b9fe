"""Delivery: abuse limits, the outbox (durable accept) and the dispatcher (attempts, retry)."""
