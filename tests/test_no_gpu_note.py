"""`finetune train`'s one line when a CUDA build sees no GPU (src/finetune/cli.py no_gpu_note): said for the cuda
image or a CUDA torch without a GPU, and only then. torch here is the +cpu build, so the CUDA build and the GPU
are FAKE (monkeypatched torch.version.cuda and torch.cuda.is_available); tests/container/test_cuda_image.py sees the
line from the real cuda image."""

from __future__ import annotations

import json

import pytest
import torch

from finetune.cli import no_gpu_note

CUDA_LABELS = json.dumps({"org.finetune.variant": "cuda", "org.finetune.target": "runtime"})


@pytest.fixture
def host(monkeypatch):
    def set_(*, torch_cuda=None, gpu=False, labels=None, rank=None):
        monkeypatch.setattr(torch.version, "cuda", torch_cuda)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)
        for name, value in (("FINETUNE_IMAGE_LABELS", labels), ("RANK", rank)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)

    return set_


def test_the_cuda_image_without_a_gpu_says_so(host):
    host(torch_cuda="13.0", labels=CUDA_LABELS)
    note = no_gpu_note()
    assert note.startswith("[finetune] no GPU is visible: the cuda image (CUDA 13.0) runs on the CPU")
    assert "invoke train --gpu" in note


def test_a_cuda_torch_outside_the_image_without_a_gpu_says_so(host):
    host(torch_cuda="13.0")
    assert no_gpu_note().startswith("[finetune] no GPU is visible: torch (CUDA 13.0)")


def test_nothing_is_said_with_a_gpu_a_cpu_build_or_on_other_ranks(host):
    host(torch_cuda="13.0", labels=CUDA_LABELS, gpu=True)
    assert no_gpu_note() is None
    host(torch_cuda=None, labels=json.dumps({"org.finetune.variant": "cpu"}))
    assert no_gpu_note() is None
    host(torch_cuda=None)  # the +cpu torch of a local venv: no GPU expected, nothing to say
    assert no_gpu_note() is None
    host(torch_cuda="13.0", labels=CUDA_LABELS, rank="1")  # torchrun: rank 0 says it once
    assert no_gpu_note() is None
