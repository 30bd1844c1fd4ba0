"""CUDA backends: provider selection, fingerprint, the error without a GPU; real GPU tests are marked."""

import pytest

from kdnas_deploy.errors import DeviceError
from kdnas_deploy.latency.backends import BACKENDS, get_backend, resolve_backend_name
from kdnas_deploy.latency.fingerprint import gpu_fingerprint
from kdnas_deploy.runtime.devices import gpu_present


def _has_cuda() -> bool:
    try:
        import onnxruntime as ort

        return gpu_present() and "CUDAExecutionProvider" in ort.get_available_providers()
    except Exception:
        return False


def test_backend_registry_resolution():
    assert resolve_backend_name("cpu") == "cpu-ort"
    assert resolve_backend_name("cuda") == "cuda-ort"
    assert resolve_backend_name("cuda", "cuda-torch") == "cuda-torch"
    with pytest.raises(DeviceError, match="runs on cuda"):
        resolve_backend_name("cpu", "cuda-torch")
    with pytest.raises(DeviceError, match="unknown backend"):
        resolve_backend_name("cpu", "tvm")
    names = ("cpu-ort", "cpu-openvino", "cuda-ort", "cuda-torch")
    assert {name: cls.name for name, cls in BACKENDS.items()} == {n: n for n in names}


def test_gpu_fingerprint_names_the_stack():
    fp = gpu_fingerprint()
    for key in ("gpu_name", "gpu_driver", "cuda_version", "cudnn_version", "cpu_model", "onnxruntime_version"):
        assert key in fp
    if not gpu_present():
        assert fp["gpu_name"] is None


@pytest.mark.skipif(_has_cuda(), reason="a GPU is present")
@pytest.mark.parametrize("backend", ["cuda-ort", "cuda-torch"])
def test_cuda_without_gpu_is_a_clear_error(backend):
    with pytest.raises(DeviceError, match="cuda"):
        get_backend("cuda", "fp32", backend=backend)


@pytest.mark.gpu
@pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU and onnxruntime-gpu")
@pytest.mark.parametrize("backend,precision", [("cuda-ort", "fp16"), ("cuda-ort", "fp32"), ("cuda-torch", "fp16")])
def test_cuda_tiny_table(tmp_path, tiny_space, backend, precision):
    from kdnas_deploy.latency.measure import MeasurePolicy
    from kdnas_deploy.latency.profiler import build_table

    be = get_backend("cuda", precision, backend=backend)
    table = build_table(tiny_space, be, [1], [16], tmp_path / "t.json", policy=MeasurePolicy.quick(), progress=False)
    assert table.fingerprint["gpu_name"] and table.fingerprint["execution_provider"] == be.provider
    assert (table.predict(list(tiny_space.members)) > 0).all()
