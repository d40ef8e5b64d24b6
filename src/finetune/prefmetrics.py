"""The held-out metrics of dpo, kto and grpo runs, before and after training, the way exact match is for SFT.

preference_accuracy (dpo, kto)  the share of held-out pairs whose chosen completion the policy's implicit reward
                                 scores above the rejected one: log pi(chosen) - log ref(chosen) greater than
                                 log pi(rejected) - log ref(rejected) (DPO's reward, without its positive beta). Before
                                 training the policy is the reference, every reward is 0 and no pair is counted: 0.
mean_reward (grpo)               the mean of the weighted reward functions over greedy completions of held-out
                                 prompts; with exact_match, the share of them equal to their reference.
"""

from __future__ import annotations

import contextlib

import torch

from finetune import rewards
from finetune.evaluate import generate
from finetune.prefdata import completion_text, prompt_text


@torch.no_grad()
def sequence_logps(model, tokenizer, prompts: list[str], completions: list[str], batch_size: int) -> torch.Tensor:
    """log p(completion | prompt) summed over the completion's tokens, for each pair of texts."""
    was_training = model.training
    model.eval()
    sums = []
    for start in range(0, len(prompts), batch_size):
        pairs = [
            (tokenizer(p, add_special_tokens=False)["input_ids"], tokenizer(c, add_special_tokens=False)["input_ids"])
            for p, c in zip(prompts[start : start + batch_size], completions[start : start + batch_size])
        ]
        width = max(len(p) + len(c) for p, c in pairs)
        ids = torch.full((len(pairs), width), tokenizer.pad_token_id, dtype=torch.long)
        attention, scored = torch.zeros_like(ids), torch.zeros_like(ids, dtype=torch.bool)
        for i, (p, c) in enumerate(pairs):  # right-padded: positions stay those of an unpadded sequence
            ids[i, : len(p) + len(c)] = torch.tensor(p + c, device=ids.device)
            attention[i, : len(p) + len(c)] = 1
            scored[i, len(p) : len(p) + len(c)] = True
        ids, attention, scored = ids.to(model.device), attention.to(model.device), scored.to(model.device)
        logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
        token_logps = logits.log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        sums.append((token_logps * scored[:, 1:]).sum(-1).cpu())
    model.train(was_training)
    return torch.cat(sums)


def reference_of(trainer):
    """The reference model of a TRL trainer as a context manager: its own copy, or (LoRA) the policy with its adapter
    disabled."""
    if getattr(trainer, "ref_model", None) is not None:
        return contextlib.nullcontext(trainer.ref_model)
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "disable_adapter"):
        return adapter_disabled(model)
    return contextlib.nullcontext(model)  # no reference kept: the policy is its own (accuracy stays 0)


@contextlib.contextmanager
def adapter_disabled(model):
    """A PEFT model with its adapter switched off for the block: the base it trained on, no second copy."""
    with model.disable_adapter():
        yield model


def preference_accuracy(policy, reference, tokenizer, pairs: list[dict], batch_size: int) -> tuple[float, float]:
    """(accuracy, mean reward margin) of the policy's implicit reward on held-out pairs (the dpo layout). reference: a
    context manager that gives the reference model (reference_of a trainer; finetune.prefeval's for a saved run)."""
    prompts = [prompt_text(tokenizer, p["prompt"]) for p in pairs]
    chosen = [completion_text(tokenizer, p["chosen"]) for p in pairs]
    rejected = [completion_text(tokenizer, p["rejected"]) for p in pairs]
    margin = sequence_logps(policy, tokenizer, prompts, chosen, batch_size) - sequence_logps(
        policy, tokenizer, prompts, rejected, batch_size
    )
    with reference as ref:
        margin -= sequence_logps(ref, tokenizer, prompts, chosen, batch_size) - sequence_logps(
            ref, tokenizer, prompts, rejected, batch_size
        )
    return float((margin > 0).float().mean()), float(margin.mean())


def mean_reward(model, tokenizer, rows: list[dict], functions, cfg, state) -> tuple[float, float | None]:
    """(mean weighted reward, exact-match share or None without references) of greedy completions of held-out
    prompts, scored by the run's own reward functions, called as TRL calls them (trainer_state: the trainer's), and
    weighted as TRL weighs them."""
    field, weights = cfg.reward.reference_field, rewards.weights(cfg.reward)
    was_training = model.training
    model.eval()
    total, exact = [], []
    for start in range(0, len(rows), cfg.eval.batch_size):
        batch = rows[start : start + cfg.eval.batch_size]
        prompts = [r["prompt"] for r in batch]
        outputs = generate(model, tokenizer, [prompt_text(tokenizer, p) for p in prompts], cfg.eval.max_new_tokens)
        completions = [[{"role": "assistant", "content": o}] if isinstance(p, list) else o
                       for p, o in zip(prompts, outputs)]  # fmt: skip
        columns = {k: [r.get(k) for r in batch] for k in batch[0] if k != "prompt"}
        scores = [f(prompts=prompts, completions=completions, trainer_state=state, **columns) for f in functions]
        total += [sum(w * s[i] for w, s in zip(weights, scores)) for i in range(len(batch))]
        if field in columns:
            exact += [o.strip() == ref.strip() for o, ref in zip(outputs, columns[field])]
    model.train(was_training)
    return sum(total) / len(total), (sum(exact) / len(exact) if exact else None)
