"""Prometheus metrics, on a registry of our own (no module globals). Labels never carry content,
user IDs or tokens: only fixed vocabularies such as an action or an enforcement mode."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events_processed = Counter(
            "chaperone_events_processed", "Timeline events processed", registry=self.registry
        )
        self.violations = Counter(
            "chaperone_policy_violations",
            "Policy violations by kind",
            ["kind"],
            registry=self.registry,
        )
        self.redactions = Counter(
            "chaperone_redactions",
            "Messages redacted by the bot, by cause",
            ["cause"],
            registry=self.registry,
        )
        self.decryption_failures = Counter(
            "chaperone_decryption_failures",
            "Events given up as undecryptable",
            registry=self.registry,
        )
        self.sweep_backlog = Gauge(
            "chaperone_retention_backlog",
            "Messages due for retention removal",
            registry=self.registry,
        )
        self.sync_lag = Gauge(
            "chaperone_sync_lag_seconds",
            "Seconds since the last committed sync batch",
            registry=self.registry,
        )
