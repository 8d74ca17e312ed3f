"""Golden quality figures from Hugging Face transformers: how far tiny-stories with its weights
rounded to bf16 is from the same model in f32, computed the way engine/src/quality.rs defines
them, so tests/quality.rs can check llmeff's figures against an independent implementation.

Usage: python scripts/make_quality_golden.py [MODEL_DIR [OUT_JSON]]
(defaults: models/tiny-stories and models/tiny-stories/quality_golden.json)

The token sequences are fixed and need no tokenizer: each of golden.json's prompts followed by
transformers' greedy continuation of it (`input_ids + greedy_new_ids`), i.e. natural text for
this model. Both models are fed the same ids, one sequence at a time (teacher forcing), on the
CPU in float32 with the attention implementation golden.json records.

The "bf16" model is the f32 model with every parameter rounded to bfloat16 (round to nearest
even) and widened back to float32; buffers (RoPE's inv_freq) are left alone, since they are not
weights. This is what llmeff's host kernels run for `load(#{ dtype: "bf16" })`: every matrix
held at bf16 and widened in registers, norm scales rounded through bf16, activations in f32.

Figures (all from float32 logits, computed in float64):
- kl_mean_nats: mean over every position of every sequence of KL(P_ref || P_run), natural log,
  P = softmax of the position's logits (the last position included: it has a distribution even
  though no next token follows).
- top1_agreement: share of those positions where argmax(ref) == argmax(run) (first of ties).
- perplexity_ref / perplexity_run: exp of the mean negative log-likelihood of each token after
  the first given the ones before it, pooled over all predicted tokens of all sequences
  (token-weighted). Per sequence it equals exp(transformers' loss with labels = input_ids), which
  the script checks.
"""
import json, os, platform, sys
import torch, transformers
from transformers import AutoModelForCausalLM


def log_softmax64(logits):
    return torch.log_softmax(logits.to(torch.float64), dim=-1)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    model_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "models", "tiny-stories")
    out_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(model_dir, "quality_golden.json")
    golden = json.load(open(os.path.join(model_dir, "golden.json")))
    attn = golden.get("attn_implementation", "sdpa")
    sequences = [p["input_ids"] + p["greedy_new_ids"] for p in golden["prompts"]]

    torch.manual_seed(0)
    ref = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                               attn_implementation=attn).eval()
    run = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                               attn_implementation=attn).eval()
    rounded = 0
    with torch.no_grad():
        for p in run.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))
            rounded += 1
        # Buffers stay f32 in both (inv_freq is computed, not a weight).
        for (name, a), (_, b) in zip(ref.named_buffers(), run.named_buffers()):
            assert torch.equal(a, b), name

    kl_sum = 0.0
    top1 = 0
    positions = 0
    nll = {"ref": 0.0, "run": 0.0}
    predicted = 0
    per_sequence = []
    for ids in sequences:
        x = torch.tensor([ids])
        with torch.no_grad():
            out_ref = ref(input_ids=x, labels=x)
            out_run = run(input_ids=x, labels=x)
        lr, lq = out_ref.logits[0], out_run.logits[0]  # (seq, vocab), float32
        assert lr.dtype == torch.float32 and lq.dtype == torch.float32
        p, q = log_softmax64(lr), log_softmax64(lq)
        # KL(P_ref || P_run) per position, as F.kl_div(q, p, log_target=True) summed over vocab.
        kl = torch.nn.functional.kl_div(q, p, log_target=True, reduction="none").sum(-1)
        agree = (lr.argmax(-1) == lq.argmax(-1))
        nxt = torch.tensor(ids[1:])
        nll_ref = -p[:-1].gather(1, nxt[:, None]).squeeze(1)
        nll_run = -q[:-1].gather(1, nxt[:, None]).squeeze(1)
        # exp(transformers' loss) is the sequence's own perplexity (float32 there, so 1e-5).
        for name, seq_nll, out in [("ref", nll_ref, out_ref), ("run", nll_run, out_run)]:
            assert abs(float(seq_nll.mean()) - float(out.loss)) < 1e-5, (name, seq_nll.mean(), out.loss)
        kl_sum += float(kl.sum())
        top1 += int(agree.sum())
        positions += len(ids)
        nll["ref"] += float(nll_ref.sum())
        nll["run"] += float(nll_run.sum())
        predicted += len(ids) - 1
        per_sequence.append({
            "input_ids": ids,
            "kl_per_position_nats": [float(v) for v in kl],
            "top1_agreement": int(agree.sum()) / len(ids),
            "loss_ref": float(out_ref.loss),
            "loss_run": float(out_run.loss),
        })

    result = {
        "description": "Quality of tiny-stories with every parameter rounded to bf16 against the same "
                       "model in f32, from transformers on CPU (made by scripts/make_quality_golden.py; "
                       "definitions in its docstring and in engine/src/quality.rs).",
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__,
                     "python": platform.python_version()},
        "attn_implementation": ref.config._attn_implementation,
        "reference": "f32",
        "run": "bf16: every parameter .to(torch.bfloat16).to(torch.float32), buffers untouched",
        "parameters_rounded": rounded,
        "sequences": per_sequence,
        "positions": positions,
        "predicted_tokens": predicted,
        "kl_mean_nats": kl_sum / positions,
        "top1_agreement": top1 / positions,
        "perplexity_ref": float(torch.tensor(nll["ref"] / predicted, dtype=torch.float64).exp()),
        "perplexity_run": float(torch.tensor(nll["run"] / predicted, dtype=torch.float64).exp()),
    }
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(json.dumps({k: result[k] for k in ["positions", "kl_mean_nats", "top1_agreement",
                                             "perplexity_ref", "perplexity_run"]}))


if __name__ == "__main__":
    main()
