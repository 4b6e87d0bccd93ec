"""Idempotency records keyed on the SHA-256 of the credential id; stale deactivations cleared.

Records already kept are rekeyed (a retry across the upgrade still replays). A deactivation
whose tenant staff have resumed since (active now, or resumed after it and suspended again)
is deleted: from now on ``api.receivers`` deletes it at the resume.
"""

import hashlib

from django.db import migrations, models


def rekey_and_clear(apps, schema_editor):  # type: ignore[no-untyped-def]
    IdempotencyRecord = apps.get_model("api", "IdempotencyRecord")
    for record in IdempotencyRecord.objects.all().only("pk", "credential"):
        digest = hashlib.sha256(record.credential.encode()).hexdigest()
        IdempotencyRecord.objects.filter(pk=record.pk).update(credential=digest)

    TenantDeactivation = apps.get_model("api", "TenantDeactivation")
    AuditEntry = apps.get_model("audit", "AuditEntry")
    for deactivation in TenantDeactivation.objects.select_related("tenant"):
        resumed_since = AuditEntry.objects.filter(
            action="tenant.resumed",
            target_type="tenants.Tenant",
            target_id=str(deactivation.tenant_id),
            at__gt=deactivation.deactivated_at,
        ).exists()
        if deactivation.tenant.status == "active" or resumed_since:
            deactivation.delete()


class Migration(migrations.Migration):
    dependencies = [
        ("api", "0001_initial"),
        ("audit", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(rekey_and_clear, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="idempotencyrecord",
            name="credential",
            field=models.CharField(max_length=64),
        ),
    ]
