from __future__ import annotations

from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "console"
    verbose_name = "Staff console"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from console.live import on_bill_settled
        from usage.signals import bill_settled

        # Each settled request moves the open dashboards' numbers (console/live.py).
        bill_settled.connect(on_bill_settled, dispatch_uid="console.live")
