"""A Hugging Face user's view of ESI, from the wheel in a clean virtual environment.

    python -m tests.repo.clean_venv_check WORKDIR   # from the repository root

Builds the wheel from the working tree and installs it, without network, into a fresh venv that sees only the
wheel's base dependencies and the `[data]` and `[train]` extras its two commands need (and theirs), linked from
this environment: no other extra, no editable install, not this repository. There it prepares the PTB-XL
sample and trains a LoRA adapter with `esi-finetune`; then a fresh process that imports only torch, numpy,
transformers and peft checks, on a saved ESI folder loaded as remote code:

- features: `get_ecg_features` / `get_text_features` return a `BaseModelOutputWithPooling` whose
  `pooler_output` is the projected embedding (CLIP's transformers-5 contract), `return_dict=False` a tuple;
- attention: `attn_implementation="eager"` and `"sdpa"` give the same caption logits (within 1e-5);
  `set_attn_implementation` switches a loaded model; the classifier refuses SDPA (it has no attention);
- outputs: config output flags reach every head; `model.base_model` is the ECG encoder;
- bf16: `from_pretrained(dtype=torch.bfloat16)` embeds real PTB-XL records with cosine >= 0.999 to float32;
- pipeline: `pipeline("feature-extraction", model=folder, trust_remote_code=True)` gives the embedding;
- adapter: `AutoPeftModelForSequenceClassification.from_pretrained(adapter, ...)`, as its card writes it,
  reloads a SEQ_CLS adapter with its labels, whose base is named without an absolute path.

Prints one `CHECK <name> <json>` line per item and exits non-zero when one fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.helpers import PTBXL_SAMPLE, REPO_ROOT, save_tiny_esi

# What a user adds for the model alone; the wheel's own base dependencies come from its metadata.
USER_PACKAGES = ("torch", "transformers", "peft")

USER_CHECKS = r"""
import json, sys
sys.path[:] = [p for p in sys.path if p not in ("", ".")]
import numpy as np
import torch
import torch.nn.functional as F
from peft import AutoPeftModelForSequenceClassification
from transformers import (AutoFeatureExtractor, AutoModel, AutoModelForSequenceClassification, AutoTokenizer,
                          pipeline)
from transformers.modeling_outputs import BaseModelOutputWithPooling

folder, adapter_card = "model", open("finetuned/adapter/README.md").read()
records = np.load("records.npz")
leads = [str(name) for name in records["lead_names"]]
extractor = AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
features = extractor(list(records["signals"]), sampling_rate=100, lead_names=leads, return_tensors="pt")
texts = ["sinus rhythm", "atrial fibrillation, rapid ventricular response"] * (len(records["signals"]) // 2)
caption = tokenizer(texts, padding=True, return_tensors="pt")

def check(name, ok, **details):
    print("CHECK", name, json.dumps({"ok": bool(ok), **details}), flush=True)

model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
with torch.no_grad():
    ecg, txt = model.get_ecg_features(**features), model.get_text_features(**caption)
    as_tuple = model.get_ecg_features(**features, return_dict=False)
    forward = model(**features, **caption, return_loss=False)
check("features", isinstance(ecg, BaseModelOutputWithPooling) and isinstance(txt, BaseModelOutputWithPooling)
      and ecg.pooler_output.shape == (len(records["signals"]), model.config.projection_dim)
      and torch.allclose(F.normalize(ecg.pooler_output, dim=-1), forward.ecg_embeds, atol=1e-6)
      and torch.allclose(F.normalize(txt.pooler_output, dim=-1), forward.text_embeds, atol=1e-6)
      and isinstance(as_tuple, tuple), type=type(ecg).__name__, shape=list(ecg.pooler_output.shape))

logits = {}
for implementation in ("eager", "sdpa"):
    loaded = AutoModel.from_pretrained(folder, trust_remote_code=True, attn_implementation=implementation).eval()
    with torch.no_grad():
        logits[implementation] = loaded(**features, **caption, return_loss=False).caption_logits
with torch.no_grad():
    model.set_attn_implementation("eager")
    switched = model(**features, **caption, return_loss=False).caption_logits
try:
    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True, attn_implementation="sdpa")
    classifier_refuses_sdpa = False
except ValueError:
    classifier_refuses_sdpa = True
difference = (logits["eager"] - logits["sdpa"]).abs().max().item()
check("attention", difference <= 1e-5 and torch.allclose(switched, logits["sdpa"], atol=1e-5)
      and model.config.decoder_config._attn_implementation == "eager" and classifier_refuses_sdpa,
      max_abs_difference=difference, classifier_refuses_sdpa=classifier_refuses_sdpa)

flagged = AutoModel.from_pretrained(folder, trust_remote_code=True, output_hidden_states=True).eval()
classifier = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True,
                                                                output_hidden_states=True).eval()
with torch.no_grad():
    out = flagged(**features, **caption, return_loss=False)
    ids = caption["input_ids"][:, :4]
    captioned = flagged.captioner()(input_ids=ids, **features)
    classified = classifier(**features)
check("outputs", out.ecg_hidden_states is not None and out.decoder_hidden_states is not None
      and out.text_hidden_states is not None and captioned.hidden_states is not None
      and classified.hidden_states is not None and model.base_model is model.ecg_model
      and classifier.base_model is classifier.ecg_model, base_model_prefix=model.base_model_prefix)

embeddings = {}
for dtype in (torch.float32, torch.bfloat16):
    loaded = AutoModel.from_pretrained(folder, trust_remote_code=True, dtype=dtype).eval()
    with torch.no_grad():
        values = features["input_values"].to(dtype)
        embeddings[dtype] = loaded.get_ecg_features(values, features["ecg_attention_mask"]).pooler_output.float()
cosine = F.cosine_similarity(embeddings[torch.float32], embeddings[torch.bfloat16], dim=-1)
check("bf16", cosine.min().item() >= 0.999, min_cosine=cosine.min().item(), records=len(cosine))

extract = pipeline("feature-extraction", model=folder, trust_remote_code=True)
embedding = torch.tensor(extract(records["signals"][0], sampling_rate=100, lead_names=leads))
check("pipeline", torch.allclose(embedding, F.normalize(ecg.pooler_output[0], dim=-1), atol=1e-5),
      pipeline=type(extract).__name__)

config = json.load(open("finetuned/adapter/adapter_config.json"))
snippet = adapter_card.split("```python\n")[1].split("```")[0].replace("path/to/this/folder", "finetuned/adapter")
namespace = {}
exec(snippet, namespace)
peft_model = namespace["model"].eval()
expected = json.load(open("finetuned/results.json"))
check("adapter", type(peft_model).__name__ == "PeftModelForSequenceClassification"
      and list(peft_model.config.id2label.values()) == expected["classes"]
      and peft_model.config.label2id == {name: i for i, name in enumerate(expected["classes"])}
      and config["task_type"] == "SEQ_CLS" and not config["base_model_name_or_path"].startswith("/"),
      base_model_name_or_path=config["base_model_name_or_path"], id2label=peft_model.config.id2label)
"""


def run(args: list, cwd: Path, env: dict | None = None, timeout: int = 900) -> str:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"{args[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-4000:]}")
    return result.stdout


def build_wheel(work: Path) -> Path:
    """The wheel of the working tree as it is (tracked and new files, no build outputs or venvs)."""
    source = work / "src"
    files = run(["git", "ls-files", "-co", "--exclude-standard"], REPO_ROOT).split()
    for name in files:
        if (REPO_ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", work / "dist", source], work)
    return next((work / "dist").glob("esi_ecg-*.whl"))


def dependency_closure(requirements: list[str], extras: tuple[str, ...] = ()) -> set[str]:
    """Installed distributions that `requirements` need, recursively (environment markers honoured; of the
    top-level requirements' extras only `extras`, of their dependencies' none)."""
    pending = [Requirement(text) for text in requirements]
    pending = [r for r in pending if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in ("", *extras))]
    for requirement in pending:
        requirement.marker = None  # chosen above; below, markers judge only their dependencies' requirements
    names: set[str] = set()
    while pending:
        requirement = pending.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(requirement.name)
        if name in names:
            continue
        names.add(name)
        pending += [Requirement(text) for text in metadata.distribution(name).requires or []]
    return names


def link_distributions(names: set[str], site: Path) -> None:
    """Symlink each distribution's top-level files and folders (package, .dist-info, bundled libraries) from
    this environment's site-packages into `site`: the venv sees exactly these, unmodified."""
    for name in names:
        distribution = metadata.distribution(name)
        root = Path(distribution.locate_file(""))
        for top in {Path(str(entry)).parts[0] for entry in distribution.files or []} - {"..", "__pycache__"}:
            target = site / top
            if (root / top).exists() and not target.exists():
                target.symlink_to(root / top)


def clean_venv(work: Path, wheel: Path) -> Path:
    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", wheel], work)
    wheel_requirements = metadata.PathDistribution(next(Path(sysconfig_purelib(env_dir)).glob("esi_ecg-*.dist-info")))
    requirements = [*(wheel_requirements.requires or []), *USER_PACKAGES]
    closure = dependency_closure(requirements, extras=("data", "train"))  # esi-prepare and esi-finetune
    link_distributions(closure, Path(sysconfig_purelib(env_dir)))
    return env_dir / "bin"


def sysconfig_purelib(env_dir: Path) -> str:
    return sysconfig.get_paths(vars={"base": str(env_dir), "platbase": str(env_dir)})["purelib"]


def main(work: Path) -> int:
    import numpy as np
    import wfdb

    work.mkdir(parents=True, exist_ok=True)
    bin_dir = clean_venv(work, build_wheel(work))
    # The publisher's side, in this environment: a tiny ESI folder saved as train.py saves one (its code files are
    # the working tree's, as in the wheel), and real PTB-XL records as arrays.
    save_tiny_esi(work / "model")
    records = [wfdb.rdrecord(str(path.with_suffix(""))) for path in sorted(PTBXL_SAMPLE.rglob("*.hea"))[:8]]
    signals = np.stack([record.p_signal.astype(np.float32) for record in records])
    np.savez(work / "records.npz", signals=signals, lead_names=np.array(records[0].sig_name))

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(work / "modules"), PATH=f"{bin_dir}:{env['PATH']}")
    run([bin_dir / "esi-prepare", "--ptbxl-dir", PTBXL_SAMPLE, "--output-dir", "prepared"], work, env)
    run(
        [bin_dir / "esi-finetune", "--model", "model", "--dataset", "prepared", "--output-dir", "finetuned",
         "--method", "lora", "--epochs", "1", "--bootstrap-samples", "20", "--eval-batch-size", "100"],
        work, env,
    )  # fmt: skip
    # The user's side: a fresh process of the clean venv that imports only torch, numpy, transformers and peft.
    result = subprocess.run(
        [bin_dir / "python", "-c", USER_CHECKS], cwd=work, env=env, capture_output=True, text=True, timeout=900
    )
    print(result.stdout, end="")
    if result.returncode != 0:
        print(result.stderr[-4000:], file=sys.stderr)
        return result.returncode
    checks = [line for line in result.stdout.splitlines() if line.startswith("CHECK ")]
    return 0 if checks and all(json.loads(line.split(" ", 2)[2])["ok"] for line in checks) else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve()))
