"""Model shapes for benchmarks/scale.py and the arithmetic on them: parameter count N, FLOPs per token, MFU.

The shapes are the published config.json numbers of real models (cited below): the benchmark builds each model from
its config with random weights, so nothing is downloaded. MFU = FLOPs per token x tokens/s / the GPU's dense BF16
peak, with FLOPs per token = 4N + 2*N_trainable + 12*L*H*Q*T (6N + 12*L*H*Q*T for full fine-tuning).
"""

from __future__ import annotations

# --- model shapes (built from a config: no download) --------------------------------------------------------------
# The config.json keys, in the order of the columns below (hidden = hidden_size, inter = intermediate_size, kv =
# num_key_value_heads, tied = tie_word_embeddings, max_pos = max_position_embeddings)
SHAPE_KEYS = (
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "tie_word_embeddings",
    "rope_theta",
    "max_position_embeddings",
)

# Each number below is copied from the model's published config.json, read through these public copies:
#  qwen2.5-0.5b  https://huggingface.co/osllmai-community/Qwen2.5-0.5B/blob/main/config.json ("_name_or_path":
#                "Qwen/Qwen2.5-0.5B"); same numbers in https://huggingface.co/plaguss/Qwen2.5-0.5B-Math-Shepherd-PRM-0.2
#  qwen2.5-1.5b  https://huggingface.co/kaitchup/Qwen2.5-1.5B-AutoRound-GPTQ-asym-4bit/blame/5b2afaa328afe39d67b206d6b0f3a5a1d43893a7/config.json
#                ("_name_or_path": "Qwen/Qwen2.5-1.5B"; vocab_size from the full config of the same model at
#                https://huggingface.co/GramTrans/GramTrans_DSL_LR1/blob/main/config.json, qwen2.5-1.5b base)
#  llama-3.2-1b  https://huggingface.co/Emm9625/Llama-3.2-1B-chatml/blob/main/config.json ("_name_or_path":
#                "meta-llama/Llama-3.2-1B") and github.com/kevinstephano/thunder_model_blocks hf_llama/llama_config.py
#  llama-3.2-3b, llama-3.1-8b  github.com/citsjtu2020/LLM-Prof sglang/Model_Config.md (the Llama-3.2-3B and
#                Llama-3.1-8B config.json files)
# Left out on purpose: Llama 3's rope_scaling (llama3 frequency scaling; it changes no tensor shape or FLOP count).
# fmt: off
SHAPE_ROWS = {
    #                model_type hidden inter  layers heads kv vocab   tied   rope_theta max_pos
    "qwen2.5-0.5b": ("qwen2",   896,   4864,  24,    14,   2, 151936, True,  1000000.0, 32768),
    "qwen2.5-1.5b": ("qwen2",   1536,  8960,  28,    12,   2, 151936, True,  1000000.0, 131072),
    "llama-3.2-1b": ("llama",   2048,  8192,  16,    32,   8, 128256, True,  500000.0,  131072),
    "llama-3.2-3b": ("llama",   3072,  8192,  28,    24,   8, 128256, True,  500000.0,  131072),
    "llama-3.1-8b": ("llama",   4096,  14336, 32,    32,   8, 128256, False, 500000.0,  131072),
    # not a real model: a few-second CPU smoke shape (the test suite runs it)
    "tiny":         ("llama",   64,    128,   2,     4,    2, 1024,   True,  10000.0,   4096),
}
# fmt: on
SHAPES = {name: dict(zip(SHAPE_KEYS, row)) for name, row in SHAPE_ROWS.items()}
FIT_MODELS = ["qwen2.5-0.5b", "qwen2.5-1.5b", "llama-3.2-3b", "llama-3.1-8b"]  # the fit table's default shapes

# --- GPU peaks for MFU --------------------------------------------------------------------------------------------
# Dense BF16 tensor-core peaks (no 2:4 sparsity: NVIDIA's datasheets print the sparse figure, twice these), matched as
# a substring of torch.cuda.get_device_name(); the first match wins; None means "not known here": MFU is then n/a.
#  H100 SXM (torch name "NVIDIA H100 80GB HBM3"): BF16 989.4 TFLOPS dense, 1,978.9 with sparsity (NVIDIA's H100
#    datasheet, https://www.nvidia.com/en-us/data-center/h100/, prints "1,979 teraFLOPS" with sparsity; the dense
#    989.4 is tabulated at https://glennklockwood.com/garden/processors/h100). H100 NVL 835e12, H100 PCIe 756e12:
#    github.com/pytorch/torchtitan torchtitan/tools/utils.py get_peak_flops ("data from
#    https://www.nvidia.com/en-us/data-center/h100/ ... one-half lower without sparsity").
#  H200 (SXM): the same GH100 compute at the same 1,979 TFLOPS sparse BF16 (https://www.nvidia.com/en-us/data-center/h200/),
#    989e12 dense in torchtitan's get_peak_flops; "FP16 / BF16 (dense) ~989 TFLOPS" in
#    https://itkb.uw.cz/2026/06/nvidia-h200-vs-b300-precisions-cores.html. H200 NVL: no figure found, so n/a.
#  A100 (SXM and PCIe): 312e12 (torchtitan, from https://www.nvidia.com/en-us/data-center/a100/).
PEAK_BF16_FLOPS = [
    ("H100 NVL", 835e12),
    ("H100 PCIe", 756e12),
    ("H200 NVL", None),
    ("GH200", None),
    ("H100", 989.4e12),
    ("H200", 989.4e12),
    ("A100", 312e12),
]


def head_dim(shape: dict) -> int:
    return shape.get("head_dim") or shape["hidden_size"] // shape["num_attention_heads"]


def analytic_params(shape: dict) -> dict:
    """Parameter counts of a Llama/Qwen2 decoder from its shape (exact for these two architectures)."""
    h, inter, layers, vocab = (
        shape[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size")
    )
    q_out, kv_out = shape["num_attention_heads"] * head_dim(shape), shape["num_key_value_heads"] * head_dim(shape)
    attn = h * q_out + 2 * h * kv_out + q_out * h
    if shape["model_type"] == "qwen2":  # Qwen2 has biases on q, k and v
        attn += q_out + 2 * kv_out
    per_layer = attn + 3 * h * inter + 2 * h  # + two RMSNorm weights
    body = layers * per_layer + h  # + final norm
    embedding = vocab * h
    tied = shape["tie_word_embeddings"]
    total = body + embedding + (0 if tied else embedding)
    return {"total": total, "matmul": body + embedding, "embedding": embedding, "tied": tied}


def count_params(model) -> dict:
    """The built model's own parameter counts (to check analytic_params, and LoRA's trainable count)."""
    total = trainable = 0
    quantized = False
    for p in model.parameters():  # shared (tied) tensors once
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
        quantized |= type(p).__name__ in ("Params4bit", "Int8Params")
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    tied = out is not None and out.weight is emb
    untied_embedding = 0 if tied else emb.numel()
    return {
        "total": total,
        "trainable": trainable,
        "matmul": total - untied_embedding,
        "trainable_matmul": trainable - (untied_embedding if emb.requires_grad else 0),
        "tied": tied,
        "quantized": quantized,
    }


def flops_per_token(shape: dict, n_matmul: int, n_trainable: int, span: float) -> float:
    """Model FLOPs per trained token: 2N forward + 2N input gradients + 2N_trainable weight gradients + attention."""
    attention = 12 * shape["num_hidden_layers"] * shape["num_attention_heads"] * head_dim(shape) * span
    return 4 * n_matmul + 2 * n_trainable + attention


def peak_flops(gpu_name: str | None) -> float | None:
    if not gpu_name:
        return None
    for key, peak in PEAK_BF16_FLOPS:
        if key in gpu_name:
            return peak
    return None


def add_flops_and_mfu(run: dict, budget: dict, peak: float | None) -> dict:
    """Add N, FLOPs per token, tokens/s and MFU to a finished run (run["model"] names its shape)."""
    shape = SHAPES[run["model"]]
    lora = run.get("method") in ("lora", "qlora")
    params = run.get("params") or {}
    analytic = analytic_params(shape)
    lora_params = params.get("trainable", 0) if lora else 0
    n = analytic["matmul"] + lora_params
    n_trainable = lora_params if lora else analytic["matmul"]
    run["n_matmul"] = n
    run["n_trainable_matmul"] = n_trainable
    if params and not params.get("quantized") and not lora:
        run["n_matmul_counted"] = params.get("matmul")  # the built model's own count, to check the formula
    run["attention_span_T"] = budget["attention_span_T"]
    run["flops_per_token"] = flops_per_token(shape, n, n_trainable, budget["attention_span_T"])
    timed = run.get("timed")
    run["tokens_per_second"] = timed["tokens_per_second"] if timed else None
    run["steady_tokens_per_second"] = timed["steady_tokens_per_second"] if timed else None
    run["tokens_per_step"] = run["tokens_trained"] / run["steps"] if run.get("steps") else None
    run["mfu"] = run["flops_per_token"] * run["tokens_per_second"] / peak if peak and run["tokens_per_second"] else None
    return run
