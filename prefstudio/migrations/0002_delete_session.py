# The app's own session table gave way to Django's (django.contrib.sessions, cached_db).

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("prefstudio", "0001_initial"),
    ]

    operations = [
        migrations.DeleteModel(
            name="Session",
        ),
    ]
