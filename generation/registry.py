"""Model references and what they resolve to.

A reference names a model the app can call: `base:NAME` (a name of PREFSTUDIO_BASE_MODELS), `run:ID` (a
succeeded training run: its base model with its LoRA adapter) or `endpoint:NAME` (an `Endpoint`). On the
command line a base model may also be given by its name alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generation.models import Endpoint
from prefstudio import storage
from training.models import TrainingRun
from training.services import artifact_dir, artifact_name, base_models, local_artifacts


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
    run_id: int | None = None  # the training run whose adapter it is

    def local_adapter(self) -> str | None:
        """`adapter_path` on this machine, the run's adapter downloaded there first when the artifacts
        storage is remote (training.services.local_artifacts); None for a base model."""
        if self.run_id is not None:
            local_artifacts(TrainingRun.objects.get(pk=self.run_id))
        return self.adapter_path


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
        if not storage.artifacts().exists(f"{artifact_name(run)}/adapter_config.json"):
            raise UnknownModel(f"{ref}: the adapter of run {run.pk} is missing from the artifact storage")
        return LocalSpec(
            ref=f"run:{run.pk}", label=f"run {run.pk} ({run.base_model} + LoRA)",
            base_path=models[run.base_model], adapter_path=str(artifact_dir(run)),
            adapter_name=f"run-{run.pk}", run_id=run.pk,
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


def choices_for(user: Any) -> list[tuple[str, str]]:
    """`choices()` that `user` may call: all of them for admins (who train); for leads, base models,
    endpoints and the runs trained on snapshots of the projects they lead."""
    from labeling.access import projects_for
    from labeling.models import Membership
    from prefstudio.roles import TRAIN, user_can

    found = choices()
    if user_can(user, TRAIN):
        return found
    projects = projects_for(user, roles=(Membership.Role.LEAD,))
    runs = TrainingRun.objects.filter(snapshot__project__in=projects).values_list("pk", flat=True)
    own = {f"run:{pk}" for pk in runs}
    return [(ref, label) for ref, label in found if not ref.startswith("run:") or ref in own]


def vllm_command(run: TrainingRun) -> str:
    """The `vllm serve` command that serves the run's base with its adapter as model `run-ID`."""
    base = base_models().get(run.base_model, run.base_model)
    rank = max(16, int(run.config.get("lora_r", 16)))
    artifacts = storage.artifacts()
    if storage.is_remote(artifacts):  # vLLM loads adapters from a local folder: copy the run's down first
        source = storage.describe(artifacts, artifact_name(run)) + "/"
        return (
            f"aws s3 cp --recursive --exclude 'checkpoints/*' {source} run-{run.pk}/ && "
            f"vllm serve {base} --enable-lora --max-lora-rank {rank} --lora-modules run-{run.pk}=run-{run.pk}"
        )
    serve = f"vllm serve {base} --enable-lora --max-lora-rank {rank}"
    return f"{serve} --lora-modules run-{run.pk}={artifact_dir(run)}"
