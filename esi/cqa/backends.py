"""Caption generation backends behind one interface: ``generate(requests) -> list[str]`` and ``model_id``.

- ``template``: deterministic writer, no model (the default and the fallback);
- ``transformers``: any local causal LM folder, batched ``generate`` with its chat template;
- ``vllm``: offline batched generation with ``vllm.LLM.chat``; in this process when ``import vllm``
  works, otherwise in a worker subprocess (``cqa/vllm_worker.py``) run by another interpreter,
  typically the separate ``.venv-vllm``. The engine starts once per backend, not per batch.

Retries (``request.attempt > 0``) sample with ``retry_temperature`` when the first pass was greedy,
so a regenerated caption can differ from the rejected one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

from esi.cqa.options import (
    BACKENDS,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    VLLM_PYTHON_ENV,
)
from esi.cqa.prompts import CaptionRequest
from esi.cqa.template_writer import TemplateWriter

WORKER_PATH = Path(__file__).resolve().parent / "vllm_worker.py"
TEMPLATE_MODEL_ID = "esi-cqa-template-v1"


class CaptionBackend(ABC):
    name: str
    model_id: str

    @abstractmethod
    def generate(self, requests: Sequence[CaptionRequest]) -> list[str]:
        """One caption per request, in order."""

    def close(self) -> None:  # noqa: B027 - only engine-backed backends hold resources
        """Release engines and subprocesses."""

    def __enter__(self) -> CaptionBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class TemplateBackend(CaptionBackend):
    name = "template"

    def __init__(self, writer: TemplateWriter) -> None:
        self.writer = writer
        self.model_id = TEMPLATE_MODEL_ID

    def generate(self, requests: Sequence[CaptionRequest]) -> list[str]:
        return [self.writer.write(r.inputs) for r in requests]


class _SamplingMixin:
    temperature: float
    retry_temperature: float
    top_p: float
    max_new_tokens: int

    def _temperature(self, request: CaptionRequest) -> float:
        if request.attempt > 0 and self.temperature <= 0:
            return self.retry_temperature
        return self.temperature


class TransformersBackend(_SamplingMixin, CaptionBackend):
    name = "transformers"

    def __init__(
        self,
        model_path: str | os.PathLike,
        batch_size: int = 8,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        temperature: float = DEFAULT_TEMPERATURE,
        top_p: float = DEFAULT_TOP_P,
        retry_temperature: float = DEFAULT_TEMPERATURE,
        device: str | None = None,
        model_id: str | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.tokenizer.padding_side = "left"  # decoder-only: new tokens must follow the prompt directly
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if not self.tokenizer.chat_template:
            raise ValueError(f"the tokenizer in {model_path} has no chat template; set one in tokenizer_config.json")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModelForCausalLM.from_pretrained(model_path).to(self.device).eval()
        self.model_id = model_id or Path(model_path).name
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.temperature, self.top_p, self.retry_temperature = temperature, top_p, retry_temperature

    def generate(self, requests: Sequence[CaptionRequest]) -> list[str]:
        outputs: list[str] = []
        for start in range(0, len(requests), self.batch_size):
            outputs += self._generate_batch(requests[start : start + self.batch_size])
        return outputs

    def _generate_batch(self, batch: Sequence[CaptionRequest]) -> list[str]:
        torch = self._torch
        prompts = [
            self.tokenizer.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True) for r in batch
        ]
        encoded = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        encoded = encoded.to(self.device)
        temperature = self._temperature(batch[0])
        if temperature > 0:
            sampling = {"do_sample": True, "temperature": temperature, "top_p": self.top_p}
        else:
            sampling = {"do_sample": False}
        torch.manual_seed(batch[0].seed)  # one generator per batch: reproducible for the same batching
        with torch.no_grad():
            generated = self.model.generate(
                **encoded, max_new_tokens=self.max_new_tokens, pad_token_id=self.tokenizer.pad_token_id, **sampling
            )
        new_tokens = generated[:, encoded["input_ids"].shape[1] :]
        return [t.strip() for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def default_vllm_python() -> str | None:
    """Interpreter for the vLLM worker: $ESI_VLLM_PYTHON, else `.venv-vllm` in the working directory if built."""
    if os.environ.get(VLLM_PYTHON_ENV):
        return os.environ[VLLM_PYTHON_ENV]
    candidate = Path.cwd() / ".venv-vllm" / "bin" / "python"
    return str(candidate) if candidate.exists() else None


class VllmBackend(_SamplingMixin, CaptionBackend):
    name = "vllm"

    def __init__(
        self,
        model_path: str | os.PathLike,
        tensor_parallel_size: int = 1,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        temperature: float = DEFAULT_TEMPERATURE,
        top_p: float = DEFAULT_TOP_P,
        retry_temperature: float = DEFAULT_TEMPERATURE,
        max_model_len: int = 4096,
        python: str | None = None,
        model_id: str | None = None,
    ) -> None:
        self.model_id = model_id or Path(model_path).name
        self.max_new_tokens = max_new_tokens
        self.temperature, self.top_p, self.retry_temperature = temperature, top_p, retry_temperature
        engine_args = {
            "model": str(model_path),
            "tensor_parallel_size": tensor_parallel_size,
            "max_model_len": max_model_len,
        }
        self._engine = None
        self._proc: subprocess.Popen | None = None
        if python is None and importlib.util.find_spec("vllm") is not None:
            from esi.cqa.vllm_worker import VllmEngine

            self._engine = VllmEngine(**engine_args)
        else:
            self._start_worker(python or default_vllm_python(), engine_args)

    def _start_worker(self, python: str | None, engine_args: dict) -> None:
        if not python or not Path(python).exists():
            raise FileNotFoundError(
                f"vllm is not importable here and no worker interpreter was found (got {python!r}); "
                f"pass --vllm-python, set ${VLLM_PYTHON_ENV}, or build .venv-vllm with `make vllm-venv`"
            )
        env = dict(os.environ)
        # CPU builds reserve this many GiB for the KV cache; a small default suits short captions.
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        cmd = [python, str(WORKER_PATH)] + [f"--{k.replace('_', '-')}={v}" for k, v in engine_args.items()]
        # The worker's stderr (engine logs) goes to ours; stdout carries only protocol lines.
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        ready = self._read_message()
        if not ready.get("ready"):
            raise RuntimeError(f"vLLM worker did not start: {ready}")

    def _read_message(self) -> dict:
        assert self._proc is not None and self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            code = self._proc.wait()
            raise RuntimeError(f"vLLM worker exited with code {code} (its log is above on stderr)")
        message = json.loads(line)
        if "error" in message:
            raise RuntimeError(f"vLLM worker failed: {message['error']}")
        return message

    def generate(self, requests: Sequence[CaptionRequest]) -> list[str]:
        payload = [
            {
                "messages": r.messages,
                "seed": r.seed,
                "temperature": self._temperature(r),
                "top_p": self.top_p,
                "max_tokens": self.max_new_tokens,
            }
            for r in requests
        ]
        if self._engine is not None:
            outputs = self._engine.generate(payload)
        else:
            assert self._proc is not None and self._proc.stdin is not None
            self._proc.stdin.write(json.dumps({"requests": payload}) + "\n")
            self._proc.stdin.flush()
            outputs = self._read_message()["outputs"]
        if len(outputs) != len(requests):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(requests)} requests")
        return [o.strip() for o in outputs]

    def close(self) -> None:
        if self._proc is not None:
            if self._proc.stdin:
                self._proc.stdin.close()  # EOF asks the worker to shut the engine down
            try:
                self._proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        self._engine = None


def make_backend(
    name: str,
    writer: TemplateWriter,
    model_path: str | None = None,
    **options,
) -> CaptionBackend:
    """Backend by name; LLM backends need ``model_path`` and take their own keyword options."""
    if name == "template":
        return TemplateBackend(writer)
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")
    if not model_path:
        raise ValueError(f"the {name} backend needs a local model folder (--model PATH)")
    if not Path(model_path).is_dir():
        raise FileNotFoundError(f"model folder {model_path} does not exist")
    cls = TransformersBackend if name == "transformers" else VllmBackend
    return cls(model_path, **options)


__all__ = [
    "BACKENDS",
    "CaptionBackend",
    "TemplateBackend",
    "TransformersBackend",
    "VllmBackend",
    "default_vllm_python",
    "make_backend",
]
