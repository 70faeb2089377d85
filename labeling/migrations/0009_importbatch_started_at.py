"""ImportBatch.started_at (to tell a lost import from a running one); admins may clear login lockouts."""

from __future__ import annotations

from django.contrib.auth.management import create_permissions
from django.db import migrations, models

# Admins unlock accounts and addresses that django-axes locked out, in Django admin.
AXES_MODELS = ("accessattempt", "accessfailurelog", "accesslog")


def let_admins_unlock(apps, schema_editor):
    config = apps.get_app_config("axes")
    config.models_module = True
    create_permissions(config, apps=apps, verbosity=0)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name="admin")
    group.permissions.add(
        *Permission.objects.filter(content_type__app_label="axes", content_type__model__in=AXES_MODELS)
    )


class Migration(migrations.Migration):
    dependencies = [
        ("labeling", "0008_importbatch_mapping_pair_hash"),
        ("axes", "0010_accessattemptexpiration"),
    ]

    operations = [
        migrations.AddField(
            model_name="importbatch",
            name="started_at",
            field=models.DateTimeField(
                blank=True, help_text="When the import was claimed (queued or started).", null=True
            ),
        ),
        migrations.RunPython(let_admins_unlock, migrations.RunPython.noop),
    ]
