"""vLLM generation for the CQA ``vllm`` backend: an engine class, and a JSONL worker process.

Standalone on purpose (imports only vLLM and the standard library): it runs under whatever
interpreter has vLLM, e.g. a separate ``.venv-vllm`` whose torch/transformers pins differ from
the main environment. Protocol on stdin/stdout, one JSON object per line:

    worker -> {"ready": true, "model": PATH}                  once the engine is up
    parent -> {"requests": [{"messages": [...], "seed": int, "temperature": float,
                             "top_p": float, "max_tokens": int}, ...]}
    worker -> {"outputs": ["text", ...]}  or  {"error": "message"}

EOF on stdin shuts the engine down. Engine logs go to stderr; the protocol has stdout to itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback


class VllmEngine:
    """One ``vllm.LLM`` for the whole run; ``generate`` takes protocol request dicts."""

    def __init__(self, model: str, tensor_parallel_size: int = 1, max_model_len: int = 4096) -> None:
        from vllm import LLM
        from vllm.platforms import current_platform

        self.llm = LLM(
            model=model,
            tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len,
            # On CPU, torch.compile adds minutes to start-up; eager mode starts in seconds.
            enforce_eager=current_platform.is_cpu(),
        )

    def generate(self, requests: list[dict]) -> list[str]:
        from vllm import SamplingParams

        params = [
            SamplingParams(temperature=r["temperature"], top_p=r["top_p"], max_tokens=r["max_tokens"], seed=r["seed"])
            for r in requests
        ]
        outputs = self.llm.chat([r["messages"] for r in requests], sampling_params=params, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]


def _protocol_stream():
    """Keep the real stdout for protocol lines and point fd 1 at stderr, so no library print can corrupt it."""
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return protocol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--max-model-len", type=int, default=4096)
    args = parser.parse_args()
    out = _protocol_stream()

    def send(message: dict) -> None:
        out.write(json.dumps(message) + "\n")
        out.flush()

    try:
        engine = VllmEngine(args.model, args.tensor_parallel_size, args.max_model_len)
    except Exception as err:  # report start-up failures to the parent, which raises them
        traceback.print_exc()
        send({"error": f"engine start failed: {type(err).__name__}: {err}"})
        return
    send({"ready": True, "model": args.model})
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            send({"outputs": engine.generate(json.loads(line)["requests"])})
        except Exception as err:  # keep serving: the parent decides whether to stop
            traceback.print_exc()
            send({"error": f"{type(err).__name__}: {err}"})


if __name__ == "__main__":
    main()
