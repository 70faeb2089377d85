"""Model references and what they resolve to.

A reference names a model the app can call: `base:NAME` (a name of PREFSTUDIO_BASE_MODELS), `run:ID` (a
succeeded training run: its base model with its LoRA adapter) or `endpoint:NAME` (an `Endpoint`). On the
command line a base model may also be given by its name alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from generation.models import Endpoint
from training.models import TrainingRun
from training.services import artifact_dir, base_models


class UnknownModel(ValueError):
    """A reference that names no model the app can call; the message says why."""


@dataclass(frozen=True)
class LocalSpec:
    """A model answered in the worker: base weights at `base_path`, with the adapter at `adapter_path`
    (None: the base itself) loaded under `adapter_name`."""

    ref: str
    label: str
    base_path: str
    adapter_path: str | None = None
    adapter_name: str | None = None


@dataclass(frozen=True)
class EndpointSpec:
    """A model answered by an OpenAI-compatible server."""

    ref: str
    label: str
    base_url: str
    model: str
    api_key_env: str

    def api_key(self) -> str | None:
        """The key from the worker's environment; KeyError-free: None when the variable is unset."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


Spec = LocalSpec | EndpointSpec


def resolve(ref: str, *, allow_paths: bool = False) -> Spec:
    """The model behind `ref`; UnknownModel names what is wrong. `allow_paths`: also `path:FOLDER`, a
    model folder on this host (the command line's; pages offer only the allow-list)."""
    kind, _, name = ref.partition(":")
    if not name:
        kind, name = "base", ref
    if kind == "path":
        if not allow_paths:
            raise UnknownModel(f"{ref}: a model folder is accepted on the command line only")
        if not (Path(name) / "config.json").is_file():
            raise UnknownModel(f"{ref}: no model folder (with a config.json) there")
        return LocalSpec(
            ref=f"path:{Path(name).resolve()}", label=Path(name).name, base_path=str(Path(name).resolve())
        )
    if kind == "base":
        models = base_models()
        if name not in models:
            raise UnknownModel(f"{ref}: not a base model on the allow-list ({', '.join(models) or 'none'})")
        return LocalSpec(ref=f"base:{name}", label=name, base_path=models[name])
    if kind == "run":
        run = TrainingRun.objects.filter(pk=int(name) if name.isdigit() else -1).first()
        if run is None:
            raise UnknownModel(f"{ref}: no training run {name}")
        if run.state != TrainingRun.State.SUCCEEDED:
            raise UnknownModel(f"{ref}: run {run.pk} has not succeeded ({run.state}); it has no adapter")
        models = base_models()
        if run.base_model not in models:
            raise UnknownModel(f"{ref}: its base model {run.base_model} is no longer on the allow-list")
        adapter = artifact_dir(run)
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise UnknownModel(f"{ref}: the adapter of run {run.pk} is missing from the artifact storage")
        return LocalSpec(
            ref=f"run:{run.pk}", label=f"run {run.pk} ({run.base_model} + LoRA)",
            base_path=models[run.base_model], adapter_path=str(adapter), adapter_name=f"run-{run.pk}",
        )  # fmt: skip
    if kind == "endpoint":
        endpoint = Endpoint.objects.filter(name=name).first()
        if endpoint is None:
            raise UnknownModel(f"{ref}: no endpoint named {name}")
        return EndpointSpec(
            ref=f"endpoint:{endpoint.name}", label=f"{endpoint.name} ({endpoint.model})",
            base_url=endpoint.base_url, model=endpoint.model, api_key_env=endpoint.api_key_env,
        )  # fmt: skip
    raise UnknownModel(f"{ref}: a model is base:NAME, run:ID or endpoint:NAME")


def choices() -> list[tuple[str, str]]:
    """Every model that can be called now, as (reference, label), for forms."""
    out = [(f"base:{name}", f"{name} (base)") for name in base_models()]
    for run in TrainingRun.objects.filter(state=TrainingRun.State.SUCCEEDED).order_by("-pk")[:50]:
        out.append((f"run:{run.pk}", f"run {run.pk}: {run.base_model} + LoRA"))
    out += [(f"endpoint:{e.name}", f"{e.name} (endpoint, {e.model})") for e in Endpoint.objects.all()]
    return out


def vllm_command(run: TrainingRun) -> str:
    """The `vllm serve` command that serves the run's base with its adapter as model `run-ID`."""
    base = base_models().get(run.base_model, run.base_model)
    return (
        f"vllm serve {base} --enable-lora --max-lora-rank {max(16, int(run.config.get('lora_r', 16)))} "
        f"--lora-modules run-{run.pk}={artifact_dir(run)}"
    )
