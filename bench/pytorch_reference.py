"""PyTorch eager side of bench/pytorch_vs_candle.sh (run it through that script,
which makes the virtual environment this needs).

  make-model DIR --tokenizer tokenizer.json   distilbert-base-uncased-sized
        DistilBertForSequenceClassification, seeded random weights, saved as
        safetensors (the directory both engines load)
  check DIR --agent BIN                       same logits from both engines?
  bench DIR --json OUT                        time PyTorch eager (one process)
  compare DIR --agent BIN --work DIR          the alternating A/B run and table (CPU)

check and bench take --device cpu|cuda[:N] and --dtype f32|f16|bf16 (default
cpu and f32): on CUDA the model is moved with model.to(device, dtype), every
timed iteration is bracketed by torch.cuda.synchronize(), and bench records
torch.cuda.max_memory_allocated() per batch size (peak statistics reset before
each batch size's warm-up). --min-seconds keeps a point iterating until both
--iterations and that many timed seconds are reached, like the agent's
--min-seconds / GPU minimum. bench/gpu/check.sh runs them on a lent GPU.

Inputs are the agent's own sample sentences (SAMPLE_TEXTS, read from
agent/src/runner.rs so both engines classify the same text), tokenised with the
directory's tokenizer.json, truncated and padded to the sequence length with an
attention mask, as the agent's sweep does. Throughput is batch / mean latency of
the timed iterations, as in the agent's report.
"""
import argparse
import glob
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER_RS = os.path.join(ROOT, "agent", "src", "runner.rs")
MAX_ABS_DIFF = 1e-3
# The agent's --dtype names.
DTYPES = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}
# Same cap as the agent's sweep (fleetbench_common::spec::MAX_ITERATIONS).
MAX_ITERATIONS = 1_000_000
# transformers' progress bars and notices would clutter the output.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def sample_texts():
    """The sentences the agent's sweep classifies, so both engines see the same tokens."""
    src = open(RUNNER_RS, encoding="utf-8").read()
    m = re.search(r"SAMPLE_TEXTS:\s*&\[&str\]\s*=\s*&\[(.*?)\];", src, re.S)
    texts = re.findall(r'"((?:[^"\\]|\\.)*)"', m.group(1)) if m else []
    if not texts:
        sys.exit(f"cannot find SAMPLE_TEXTS in {RUNNER_RS}")
    return [t.replace('\\"', '"').replace("\\\\", "\\") for t in texts]


def set_threads(n):
    """Before torch is imported: OpenMP and MKL read these once."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    import torch
    torch.set_num_threads(n)
    return torch


def encode(model_dir, texts, seq_len):
    """Token ids and mask, truncated and padded to seq_len like the agent's encode()."""
    import torch
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.enable_truncation(max_length=seq_len)
    tok.enable_padding(length=seq_len, pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(texts)
    ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
    mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
    return ids, mask


def load(model_dir, device="cpu", dtype="f32"):
    """The directory's safetensors in float32, then model.to(device, dtype)."""
    import torch
    from transformers import DistilBertForSequenceClassification
    model = DistilBertForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
    return model.to(device=torch.device(device), dtype=getattr(torch, DTYPES[dtype])).eval()


def synchronizer(torch, device):
    """A function that waits for the device's queued work (a no-op on the CPU)."""
    if torch.device(device).type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def device_facts(torch, device):
    """What the JSON records about the device PyTorch ran on."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return {"device": str(dev), "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    matmul = torch.backends.cuda.matmul
    return {"device": str(dev), "device_name": torch.cuda.get_device_name(dev),
            "cuda": torch.version.cuda,
            "capability": ".".join(map(str, torch.cuda.get_device_capability(dev))),
            "tf32_matmul": bool(matmul.allow_tf32),
            "fp16_reduced_precision_reduction": bool(matmul.allow_fp16_reduced_precision_reduction),
            "bf16_reduced_precision_reduction": bool(matmul.allow_bf16_reduced_precision_reduction)}


def cmd_make_model(a):
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification
    cfg = DistilBertConfig(
        vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072,
        max_position_embeddings=512, activation="gelu", pad_token_id=0,
        num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
        architectures=["DistilBertForSequenceClassification"],
    )
    torch.manual_seed(a.seed)
    model = DistilBertForSequenceClassification(cfg).eval()
    model.save_pretrained(a.dir, safe_serialization=True)
    shutil.copy(a.tokenizer, os.path.join(a.dir, "tokenizer.json"))
    params = sum(p.numel() for p in model.parameters())
    size = os.path.getsize(os.path.join(a.dir, "model.safetensors"))
    print(f"== model: {a.dir}: distilbert-base-uncased-sized, seed {a.seed}, "
          f"{params:,} parameters, model.safetensors {size / 2**20:.0f} MiB")


def cmd_check(a):
    """One forward of each engine on the same sentences, from the same files."""
    torch = set_threads(a.threads)
    texts = sample_texts()
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads), CANDLE_NUM_THREADS=str(a.threads),
               RUST_LOG="warn")
    out = subprocess.run(
        [a.agent, "classify", "--json", "--model", a.dir, "--weights", "hub",
         "--device", a.device, "--dtype", a.dtype, "--engine", "fleetbench", *texts],
        env=env, check=True, capture_output=True, text=True)
    if out.stderr.strip():
        print(out.stderr.strip(), file=sys.stderr)
    candle = [r["logits"] for r in json.loads(out.stdout)]
    model = load(a.dir, a.device, a.dtype)
    ids, mask = encode(a.dir, texts, a.seq_len)
    with torch.inference_mode():
        ref = model(input_ids=ids.to(a.device), attention_mask=mask.to(a.device)).logits
        ref = ref.float().tolist()
    diff = max(abs(c - r) for cr, rr in zip(candle, ref) for c, r in zip(cr, rr))
    scale = max(abs(r) for rr in ref for r in rr)
    agree = sum((cr[1] > cr[0]) == (rr[1] > rr[0]) for cr, rr in zip(candle, ref))
    print(f"== logits check ({a.device}, {a.dtype}) on {len(texts)} sentences: "
          f"max |candle - torch| = {diff:.2e} "
          f"(largest |logit| {scale:.3f}; labels agree {agree}/{len(texts)}); "
          f"first: candle {[round(x, 5) for x in candle[0]]} torch {[round(x, 5) for x in ref[0]]}")
    if not (len(candle) == len(ref) and diff < a.tol):
        sys.exit(f"the engines disagree: max abs diff {diff:.2e} >= {a.tol}")


def cmd_bench(a):
    """Warm-up then timed forwards per batch size, in this one process.

    Like the agent's sweep: the device is synchronised after every forward
    (before the clock is read), a point runs until both --iterations and
    --min-seconds of timed iterations are reached, and throughput is batch
    size over mean latency. t_start and t_end (Unix seconds) bound each point's
    timed iterations, so that sensor logs can be cut to them."""
    torch = set_threads(a.threads)
    import transformers
    cuda = torch.device(a.device).type == "cuda"
    model = load(a.dir, a.device, a.dtype)
    sync = synchronizer(torch, a.device)
    texts = sample_texts()
    points = []
    for batch in [int(b) for b in a.batch_sizes.split(",")]:
        ids, mask = encode(a.dir, [texts[i % len(texts)] for i in range(batch)], a.seq_len)
        ids, mask = ids.to(a.device), mask.to(a.device)
        if cuda:
            sync()
            torch.cuda.reset_peak_memory_stats(a.device)
        with torch.inference_mode():
            for _ in range(a.warmup):
                model(input_ids=ids, attention_mask=mask)
            sync()
            samples_ms = []
            t_start = time.time()
            started = time.perf_counter()
            while ((len(samples_ms) < a.iterations
                    or time.perf_counter() - started < a.min_seconds)
                   and len(samples_ms) < MAX_ITERATIONS):
                t0 = time.perf_counter()
                model(input_ids=ids, attention_mask=mask)
                sync()
                samples_ms.append((time.perf_counter() - t0) * 1e3)
            t_end = time.time()
        mean = statistics.mean(samples_ms)
        point = {"batch_size": batch, "throughput": batch / (mean / 1e3), "mean_ms": mean,
                 "iterations": len(samples_ms), "timed_seconds": sum(samples_ms) / 1e3,
                 "t_start": t_start, "t_end": t_end, "samples_ms": samples_ms}
        if cuda:
            point["peak_allocated_bytes"] = torch.cuda.max_memory_allocated(a.device)
            point["peak_reserved_bytes"] = torch.cuda.max_memory_reserved(a.device)
        points.append(point)
        print(f"pytorch {a.device} {a.dtype} batch {batch:4d}: {mean:9.3f} ms mean, "
              f"{batch / (mean / 1e3):10.2f} samples/s, {len(samples_ms)} iterations", flush=True)
    json.dump({"torch": torch.__version__, "transformers": transformers.__version__,
               "threads": torch.get_num_threads(),
               "attn_implementation": model.config._attn_implementation,
               "cpu_capability": torch.backends.cpu.get_cpu_capability(),
               "dtype": a.dtype, "seq_len": a.seq_len, "warmup": a.warmup,
               "iterations": a.iterations, "min_seconds": a.min_seconds,
               **device_facts(torch, a.device),
               "points": points}, open(a.json, "w"), indent=1)


def cpu_jiffies():
    """(busy, steal) seconds of the whole machine so far, from /proc/stat."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = f[:8]
    hz = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / hz, steal / hz


def run_block(cmd, env):
    """Runs one engine's process; returns wall seconds and how much of the
    machine's CPUs other processes (and the hypervisor, as steal) took meanwhile."""
    busy0, steal0 = cpu_jiffies()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy1, steal1 = cpu_jiffies()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    own = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    ncpu = os.cpu_count()
    others = max(0.0, (busy1 - busy0) - own) / (wall * ncpu)
    steal = (steal1 - steal0) / (wall * ncpu)
    return wall, others, steal


def cmd_compare(a):
    os.makedirs(a.work, exist_ok=True)
    batches = [int(b) for b in a.batch_sizes.split(",")]
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads), CANDLE_NUM_THREADS=str(a.threads),
               OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads), RUST_LOG="warn")

    def candle(out, agent=None):
        cmd = [agent or a.agent, "bench", "--model", a.dir, "--weights", "hub", "--device", "cpu",
               "--engine", "fleetbench", "--dtype", a.dtype, "--batch-sizes", a.batch_sizes,
               "--seq-len", str(a.seq_len), "--warmup", str(a.warmup),
               "--iterations", str(a.iterations), "--out", out]
        wall, others, steal = run_block(cmd, env)
        report = json.load(open(glob.glob(os.path.join(out, "*.json"))[0]))
        tp = {p["batch_size"]: p["outcome"]["throughput"] for p in report["points"]
              if p["outcome"].get("status") == "measured"}
        return tp, wall, others, steal, report

    def torch(out):
        cmd = [sys.executable, os.path.abspath(__file__), "bench", a.dir, "--json", out,
               "--threads", str(a.threads), "--batch-sizes", a.batch_sizes,
               "--seq-len", str(a.seq_len), "--warmup", str(a.warmup),
               "--iterations", str(a.iterations), "--dtype", a.dtype]
        wall, others, steal = run_block(cmd, env)
        report = json.load(open(out))
        return ({p["batch_size"]: p["throughput"] for p in report["points"]},
                wall, others, steal, report)

    # Alternation: each round runs every batch size on one engine, then on the
    # other, in one fresh process per engine and round (model loading is outside
    # the timed iterations for both). Whole-sweep blocks rather than one process
    # per batch size halve the model loads, and A and B of a batch size are
    # still under a minute apart; the order flips every round (A B, B A, ...)
    # so neither engine always runs first, e.g. right after the other's heavy
    # batch 32, or in the first seconds of a new burst of load.
    engines = {"fleetbench": candle, "pytorch": torch}
    if a.baseline_agent:
        # Another build of the agent (e.g. before a change), in the same
        # alternation, so the change's effect and both ratios come from one run.
        engines["before"] = lambda out: candle(out, a.baseline_agent)
    results = {name: {b: [] for b in batches} for name in engines}
    interference = {name: [] for name in engines}
    reports = {}
    names = list(engines)
    for r in range(1, a.rounds + 1):
        # Each round starts with the next engine (A B C, B C A, ...; with two
        # engines: A B, B A), so none always runs first.
        shift = (r - 1) % len(names)
        order = names[shift:] + names[:shift]
        for name in order:
            tp, wall, others, steal, reports[name] = engines[name](
                os.path.join(a.work, f"{name}-{r}" + (".json" if name == "pytorch" else "")))
            for b in batches:
                results[name][b].append(tp.get(b, float("nan")))
            interference[name].append(others)
            print(f"round {r} {name:10s}: " + ", ".join(f"b{b} {tp.get(b, float('nan')):6.2f}"
                                                      for b in batches)
                  + f" samples/s; {wall:5.1f} s; other processes used {others:4.0%} of the CPUs"
                  + (f", steal {steal:.0%}" if steal >= 0.005 else ""), flush=True)

    cr, tr = reports["fleetbench"], reports["pytorch"]
    load1, load5, load15 = os.getloadavg()
    print()
    print(f"candle {cr['environment']['candle_version']} (fleetbench-agent "
          f"{cr['environment']['agent_version']}, {cr['environment']['threads']} threads) vs "
          f"torch {tr['torch']} + transformers {tr['transformers']} eager "
          f"({tr['threads']} threads, attention '{tr['attn_implementation']}', "
          f"CPU capability {tr['cpu_capability']}, inference_mode)")
    print(f"{cr['host']['cpu_model']}, {os.cpu_count()} logical CPUs; {a.dtype}, seq {a.seq_len}, "
          f"{a.warmup} warm-up + {a.iterations} timed iterations, {a.rounds} alternating rounds; "
          f"other processes' CPU share per block, median: fleetbench "
          f"{statistics.median(interference['fleetbench']):.0%}, pytorch "
          f"{statistics.median(interference['pytorch']):.0%}; load average "
          f"{load1:.2f} {load5:.2f} {load15:.2f}")
    print()
    if a.baseline_agent:
        print("| batch | fleetbench before samples/s | fleetbench (candle) samples/s | PyTorch eager samples/s | before / torch | candle / torch | candle / before |")
        print("|------:|----------------------------:|------------------------------:|------------------------:|---------------:|---------------:|----------------:|")
        for b in batches:
            o = statistics.median(results["before"][b])
            c = statistics.median(results["fleetbench"][b])
            t = statistics.median(results["pytorch"][b])
            print(f"| {b} | {o:.2f} | {c:.2f} | {t:.2f} | {o / t:.2f}x | {c / t:.2f}x | {c / o:.2f}x |")
        return
    print("| batch | fleetbench (candle) samples/s | PyTorch eager samples/s | candle / torch |")
    print("|------:|------------------------------:|------------------------:|---------------:|")
    for b in batches:
        c = statistics.median(results["fleetbench"][b])
        t = statistics.median(results["pytorch"][b])
        print(f"| {b} | {c:.2f} | {t:.2f} | {c / t:.2f}x |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make-model")
    p.add_argument("dir")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=cmd_make_model)
    for name, fn in (("check", cmd_check), ("bench", cmd_bench), ("compare", cmd_compare)):
        p = sub.add_parser(name)
        p.add_argument("dir")
        p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
        p.add_argument("--seq-len", type=int, default=128)
        p.set_defaults(fn=fn)
        if name in ("check", "compare"):
            p.add_argument("--agent", required=True)
        if name == "compare":
            p.add_argument("--baseline-agent",
                           help="another fleetbench-agent build (e.g. before a change) to run in the same alternation")
        if name in ("check", "bench"):
            p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
        p.add_argument("--dtype", default="f32", choices=sorted(DTYPES))
        if name == "check":
            p.add_argument("--tol", type=float, default=MAX_ABS_DIFF,
                           help="largest accepted |candle - torch| logit difference")
        if name in ("bench", "compare"):
            p.add_argument("--batch-sizes", default="1,8,32")
            p.add_argument("--warmup", type=int, default=2)
            p.add_argument("--iterations", type=int, default=5)
        if name == "bench":
            p.add_argument("--json", required=True)
            p.add_argument("--min-seconds", type=float, default=0.0,
                           help="keep iterating until this many timed seconds are reached")
        if name == "compare":
            p.add_argument("--rounds", type=int, default=3)
            p.add_argument("--work", required=True)
    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
