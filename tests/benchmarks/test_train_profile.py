"""The step profiler of benchmarks/bench_train.py --profile-step: backward operators are charged to the part whose
forward created them, and the parts add up to the profiled time."""

import torch
from torch.profiler import profile

from benchmarks.train_profile import breakdown, grouped, label_module


def test_backward_is_charged_to_the_part_that_ran_forward():
    torch.manual_seed(0)
    small, large = torch.nn.Linear(8, 8), torch.nn.Linear(8, 1024)
    handles = label_module(small, "small") + label_module(large, "large")
    x = torch.randn(256, 8)
    with profile() as profiler:
        large(small(x)).square().sum().backward()
    for handle in handles:
        handle.remove()
    parts = breakdown(profiler.events(), steps=1)
    assert {"small", "large", "backward: small", "backward: large"} <= set(parts)
    # The large layer's matrix products (forward and backward) are its own, not the small layer's.
    assert "aten::mm" in parts["backward: large"]["top_operators"]
    assert parts["backward: large"]["seconds_per_step"] > parts["backward: small"]["seconds_per_step"]
    assert abs(sum(p["share"] for p in parts.values()) - 1) < 1e-3
    total = sum(p["seconds_per_step"] for p in parts.values())
    together = grouped(parts)
    assert abs(sum(p["seconds_per_step"] for p in together.values()) - total) < 1e-3
    assert together["large"]["seconds_per_step"] == round(
        parts["large"]["seconds_per_step"] + parts["backward: large"]["seconds_per_step"], 4
    )
