"""Placeholder until the Synapse harness lands."""
