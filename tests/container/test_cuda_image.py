"""The CUDA runtime and dev images built from the shipped docker/Dockerfile through `invoke build --variant cuda`, on
a machine without a GPU (tests/container/helpers_cuda.py builds them). STAND-IN: the nvidia/cuda base image is
local/cuda-base-standin:13.0.3 (tests/container/standin/cuda-base.Dockerfile, made from a debootstrapped Debian
trixie), as the CPU images' Debian and Miniforge bases are stand-ins (conftest.py); torch, the NVIDIA wheels and every
other stage are as shipped. What this proves on CPU: the image builds, torch is the CUDA build invoke.yaml names,
every shared library of torch's CUDA stack resolves inside the image except the driver's (injected at run time), the
default fine-tune runs and says no GPU is visible, and the sizes stay within invoke.yaml's budgets. What needs a GPU
host (not here): that the driver injection works and kernels run.

Deselected by default (marker cuda_image: several GB from PyPI); run with `-m cuda_image`.
"""

from __future__ import annotations

import json

import pytest
import yaml

from .conftest import FIGURES, REPO
from .helpers_builds import within_budget

INVOKE_YAML = yaml.safe_load((REPO / "invoke.yaml").read_text())
SITE = "/opt/env/lib/python3.11/site-packages"

pytestmark = [pytest.mark.container, pytest.mark.slow, pytest.mark.cuda_image]

# Libraries of the NVIDIA driver, not of any wheel: the NVIDIA container toolkit mounts the host driver's copies into
# the container at start (its "compute" and "utility" libraries: NVIDIA_DRIVER_CAPABILITIES=compute,utility in the
# base image's environment), so in a built image they cannot resolve and must not be shipped: a copy in the image
# would shadow the host's and break on any other driver version. Of these, ldd sees only libcuda.so.1 (libcaffe2_nvrtc
# links it); the CUDA runtime, NCCL, cuDNN and NVML users open the others with dlopen, which ldd cannot see.
DRIVER_LIBS = {
    "libcuda.so.1": "the CUDA driver API",
    "libnvidia-ml.so.1": "NVML (NCCL's topology, torch's device counting)",
    "libnvidia-ptxjitcompiler.so.1": "the driver's PTX JIT",
    "libnvidia-nvvm.so.4": "the driver's NVVM (link-time optimisation)",
}
# Optional plugins shipped inside the NVIDIA and Triton wheels, each loaded only when a feature that this image does
# not use is switched on; what they need is host software (RDMA, MPI, other networks) or a sibling library they find
# only once it is loaded (no $ORIGIN RUNPATH). Listed by file so that anything else unresolved fails the test.
OPTIONAL_PLUGINS = {
    "nvidia/cu13/lib/libcufile_rdma.so.1": "GPUDirect Storage over RDMA: the host's rdma-core (libibverbs, mlx5)",
    "nvidia/cu13/lib/libcusolverMg.so.12": "cuSOLVER's multi-GPU API, which torch does not link",
    "nvidia/nvshmem/lib/nvshmem_bootstrap_": "NVSHMEM's launch bootstraps for MPI, PMIx, OpenSHMEM (NVSHMEM_BOOTSTRAP)",
    "nvidia/nvshmem/lib/nvshmem_transport_": "NVSHMEM's InfiniBand, libfabric and UCX transports (multi-node only)",
    "triton/plugins/": "Triton's plugin examples, loaded only through TRITON_PLUGIN_DIRS",
}


def _run(workspace, image: str, script: str, *args: str) -> str:
    return workspace.engine("run", "--rm", *args, image, "bash", "-c", script, timeout=1800).stdout


def test_torch_is_the_cuda_build_invoke_yaml_names(workspace, cuda_runtime_image):
    out = _run(
        workspace,
        "finetune:cuda",
        "python -c 'import json, torch, importlib.metadata as m; print(json.dumps([torch.__version__,"
        ' torch.version.cuda, torch.backends.cudnn.version(), torch.cuda.is_available(), m.version("torch")]))\'',
    )
    version, cuda, cudnn, available, dist = json.loads(out.strip().splitlines()[-1])
    FIGURES["cuda image: torch / CUDA / cuDNN"] = f"{version} / {cuda} / {cudnn}"
    # PyPI's wheel (distribution 2.13.0; torch calls itself 2.13.0+cu130), not the +cpu wheel from docker/wheelhouse
    assert dist == "2.13.0" and version.startswith("2.13.0+cu"), (dist, version)
    assert cuda == INVOKE_YAML["cuda"]["version"]
    assert cudnn and not available  # cuDNN loads from its wheel; no GPU on this machine
    env = dict(e.split("=", 1) for e in workspace.engine.inspect("finetune:cuda")["Config"]["Env"])
    # what the NVIDIA container toolkit reads to inject the driver: inherited from the base, not overwritten
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility" and env["NVIDIA_VISIBLE_DEVICES"] == "all"


def test_every_shared_library_of_the_cuda_stack_resolves_except_the_drivers(workspace, cuda_runtime_image):
    """ldd over every .so under site-packages/nvidia, torch/lib and triton: the only "not found" are the driver's."""
    script = f"""
cd {SITE}
find nvidia torch/lib triton -name '*.so*' -type f | sort | while read -r so; do
  ldd "$so" 2>&1 | awk -v so="$so" '/not found/ {{print so "\\t" $1}}'
done
echo "checked $(find nvidia torch/lib triton -name '*.so*' -type f | wc -l)"
"""
    out = _run(workspace, "finetune:cuda", script).strip().splitlines()
    checked = int(out.pop().split()[1])
    unresolved = [line.split("\t") for line in out]
    driver = sorted({lib for _, lib in unresolved if lib in DRIVER_LIBS})
    plugins = sorted(
        {so for so, lib in unresolved if lib not in DRIVER_LIBS and so.startswith(tuple(OPTIONAL_PLUGINS))}
    )
    FIGURES["cuda image: shared objects checked with ldd"] = checked
    FIGURES["cuda image: unresolved driver libraries"] = ", ".join(driver) or "none"
    FIGURES["cuda image: optional plugins with host-only needs"] = len(plugins)
    assert checked > 50
    unexpected = [f"{so} needs {lib}" for so, lib in unresolved if lib not in DRIVER_LIBS and so not in plugins]
    assert not unexpected, "libraries that resolve nowhere in the image:\n" + "\n".join(unexpected)


def test_finetune_train_runs_on_cpu_in_the_cuda_image_and_says_no_gpu_is_visible(workspace, cuda_config):
    proc = workspace.invoke(
        "train", "--docker", "--variant", "cuda", "--output-dir", "runs/cuda-on-cpu", config=cuda_config, timeout=3600
    )
    assert "[finetune] no GPU is visible: the cuda image (CUDA 13.0) runs on the CPU" in proc.stdout, proc.stdout[
        -3000:
    ]
    assert "[finetune] cpu," in proc.stdout  # the settings line: the run chose the CPU
    run = workspace.root / "runs" / "cuda-on-cpu"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["eval_accuracy"] >= 0.9, summary
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["container"]["image"] == "finetune:cuda"
    assert manifest["versions"]["torch"] == "2.13.0"  # the distribution's version: PyPI's CUDA wheel
    FIGURES["cuda image: default run on CPU, eval accuracy"] = summary["eval_accuracy"]


def test_cuda_runtime_image_is_within_its_size_budget(cuda_runtime_image):
    within_budget(cuda_runtime_image, "cuda")


def test_cuda_dev_image_is_within_its_size_budget(cuda_dev_image):
    within_budget(cuda_dev_image, "cuda-dev")


# pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime, the official runtime image of the same torch and CUDA: 3.0 GB
# compressed, as recorded in github.com/by77er/distributed_agents_environments deploy/images/README.md (its table
# "What is in them": base `pytorch/pytorch:TORCH-cuda13.0-cudnn9-runtime` (3.0 GB), the column "Compressed"; that
# repository's deploy/images/trainer/Dockerfile pins TORCH_IMAGE=pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime).
# No registry is reachable here to measure it; Docker Hub's tag page shows the same kind of (compressed) figure.
PYTORCH_OFFICIAL_RUNTIME_COMPRESSED_MB = 3000
PULL_SIZE_AIM = 0.6  # issue 15: the CUDA runtime image's pull at most 0.6x the official one's


@pytest.mark.xfail(
    strict=True,
    reason="not met: the image carries the same NVIDIA wheels as the official one (nvidia/ 2.7 GB, torch 1.1 GB, "
    "triton 0.6 GB uncompressed); below 0.6x needs fewer CUDA libraries, not a smaller base",
)
def test_cuda_runtime_pull_size_is_at_most_0_6x_the_official_pytorch_runtime(cuda_runtime_image):
    """Compressed against compressed: the image's layers through gzip (helpers_cuda.image_figures) against the
    official image's published compressed size (above). strict: once the aim is met this xfail fails, to be removed."""
    ratio = cuda_runtime_image["compressed"] / 1e6 / PYTORCH_OFFICIAL_RUNTIME_COMPRESSED_MB
    FIGURES["cuda runtime pull / pytorch/pytorch runtime pull"] = (
        f"{round(cuda_runtime_image['compressed'] / 1e6)} / {PYTORCH_OFFICIAL_RUNTIME_COMPRESSED_MB} MB = {ratio:.2f}x"
        f" (aim <= {PULL_SIZE_AIM}x)"
    )
    assert ratio <= PULL_SIZE_AIM, f"pull size {ratio:.2f}x the official pytorch/pytorch runtime image's"
