"""torch DDP over gpuops ops (issue 18, item 2) on the CPU: two processes (gloo) each take half of a batch of
benchmarks/data_parallel.py's small model (depthwise, involution, correlation, RAFT lookup); the gradients DDP
averages equal one process's on the whole batch.  The same script runs under torchrun with NCCL on GPUs."""
import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from benchmarks import data_parallel as dp  # noqa: E402


def test_ddp_gradients_equal_one_process(tmp_path):
    out = dp.run_spawned(2, global_batch=4, steps=1, device="cpu", results=str(tmp_path / "rank0.pt"))
    want = dp.single_process_grads(4)
    assert set(out["grads"]) == set(want)
    for name, g in want.items():
        torch.testing.assert_close(out["grads"][name], g, rtol=1e-10, atol=1e-12, msg=name)
    assert out["samples_per_s"] > 0
