"""Shipped with an exported analytic run: loads with transformers alone (trust_remote_code)."""
