# STAND-IN for nvidia/cuda:13.0.3-base-ubuntu24.04 (invoke.yaml image.base_images.cuda), built by the CUDA image
# tests (tests/container/helpers_cuda.py) because no image registry is reachable from this project's CI machines.
# Tagged local/cuda-base-standin:13.0.3. What the shipped docker/Dockerfile's cuda variant relies on from the real
# base, reproduced here on the locally made Debian base (docker/engine.sh base trixie: glibc 2.41, close to Ubuntu
# 24.04's 2.39; apt and the shadow tools as in Ubuntu):
#   - a user `ubuntu` (and group) with UID/GID 1000, as ubuntu:24.04 ships it: the Dockerfile replaces that user;
#   - the environment NVIDIA's base Dockerfile sets (gitlab.com/nvidia/container-images/cuda,
#     dist/<version>/ubuntu2404/base/Dockerfile; the values below follow the published history of a 13.0 base:
#     `ENV CUDA_VERSION=13.0.1`, `ENV NVIDIA_VISIBLE_DEVICES=all`, `ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility`,
#     `ENV LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64:/usr/local/cuda/lib64`,
#     `ENV PATH=/usr/local/nvidia/bin:/usr/local/cuda/bin:...`, NVARCH and NVIDIA_REQUIRE_CUDA as in
#     wordslab-org/wordslab doc/infra/containers/nvidia-cuda-base-install.sh, a copy of the 12.0.0 one), with this
#     tag's CUDA version. The NVIDIA_* variables are what the NVIDIA container toolkit reads to inject the driver.
# Not reproduced: the real base's cuda-cudart-13-0 and cuda-compat-13-0 packages (/usr/local/cuda-13.0: libcudart
# and a forward-compatibility libcuda). torch does not use them (its wheels carry their own CUDA runtime), and
# nothing here runs on a GPU. NVIDIA_REQUIRE_CUDA keeps only its `cuda>=13.0` term (the real one also lists driver
# branches per GPU brand): the toolkit, which reads it, never runs here.
ARG BASE_IMAGE=local/debian:trixie
FROM ${BASE_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN groupadd --gid 1000 ubuntu && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash ubuntu
ENV NVARCH=x86_64 \
    NVIDIA_REQUIRE_CUDA="cuda>=13.0" \
    CUDA_VERSION=13.0.3 \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64:/usr/local/cuda/lib64 \
    PATH=/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LABEL org.finetune.standin="nvidia/cuda:13.0.3-base-ubuntu24.04 (tests/container/standin/cuda-base.Dockerfile)"
