from __future__ import annotations

from django.apps import AppConfig


class UsageConfig(AppConfig):
    name = "usage"
    verbose_name = "Usage"

    def ready(self) -> None:
        from usage import alerts, metrics
        from usage.signals import bill_settled

        # Spend alerts check their thresholds after every settlement.
        bill_settled.connect(alerts.on_bill_settled, dispatch_uid="usage-spend-alerts")
        # Prometheus: each settled bill counts its request, tokens and cost.
        bill_settled.connect(metrics.on_bill_settled, dispatch_uid="usage-metrics")
