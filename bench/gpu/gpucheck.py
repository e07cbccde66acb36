"""Helpers of bench/gpu/check.sh: everything it does that is easier in Python.

  unxz SRC DST            unpack an xz-compressed agent (lzma module), chmod +x
  libdirs                 the CUDA library folders inside PyTorch's nvidia wheels
  golden ...              classify the fixture's golden texts with the agent and
                          compare the logits with Hugging Face transformers' ones
  matmul ...              torch.matmul rate (bf16, and f32 with TF32 off), TFLOP/s
  summary --out DIR       read everything the run left in DIR, write DIR/summary.md
                          and print it

Only the standard library is needed, except by `matmul` (torch). Nothing here
fails the run by itself except `golden` (exit 1 on a mismatch) and errors.
"""
import argparse
import datetime as dt
import glob
import json
import lzma
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import time

# Largest accepted |agent - transformers| logit difference per dtype, on the
# tiny fixture, whose logits reach 4.5. The CPU golden tests measured f16
# 9.2e-3 and bf16 4.7e-2. On an H200 (2026-11-29, bench/RESULTS.md) f32 gave
# 5.0e-6, f16 1.2e-2 and bf16 1.1e-1: cuBLAS and candle's CUDA kernels round
# half-precision intermediates in other places than the CPU does, and bf16
# keeps 8 bits of mantissa (2^-8 x 4.5 = 1.8e-2 per rounding of a logit-sized
# value). The GPU tolerances are therefore 2e-2 and 1.5e-1, and on every
# device every label must also agree with transformers'.
GOLDEN_TOL = {"f32": 1e-4, "f16": 1e-2, "bf16": 5e-2}
GOLDEN_TOL_GPU = {"f32": 1e-4, "f16": 2e-2, "bf16": 1.5e-1}
# The GPU goal: bf16 DistilBERT at batch 128 reaches this share of the
# card's own bf16 matrix-product rate.
BF16_SHARE_GOAL = 0.40
MIB = 2**20


# ---------------------------------------------------------------- small tools

def cmd_unxz(a):
    os.makedirs(os.path.dirname(os.path.abspath(a.dst)), exist_ok=True)
    with lzma.open(a.src) as src, open(a.dst, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.chmod(a.dst, 0o755)
    print(f"unpacked {a.src} ({os.path.getsize(a.src) / MIB:.1f} MiB) to {a.dst} "
          f"({os.path.getsize(a.dst) / MIB:.1f} MiB)")


def cmd_libdirs(_a):
    """nvidia/cu13/lib (CUDA 13 wheels: one tree) and nvidia/*/lib (per-package
    wheels), colon-separated. `nvidia` is a namespace package: no __file__,
    so its __path__ is what locates it."""
    try:
        import nvidia
    except ImportError as e:
        print(f"no nvidia wheels importable ({e})", file=sys.stderr)
        return
    dirs = []
    for base in list(getattr(nvidia, "__path__", [])):
        for d in [os.path.join(base, "cu13", "lib")] + sorted(glob.glob(os.path.join(base, "*", "lib"))):
            if os.path.isdir(d) and d not in dirs:
                dirs.append(d)
    print(":".join(dirs))


# --------------------------------------------------------------------- golden

def truncated_text(case, max_length, tokenizer_json):
    """The text transformers actually classified when it truncated the case to
    max_length tokens: its word pieces decoded from the golden input_ids.
    `classify` pads and truncates to the model's 512 positions, not to 128, so
    the full text would give other logits."""
    if sum(case["attention_mask"]) < max_length:
        return case["text"]
    vocab = json.load(open(tokenizer_json, encoding="utf-8"))["model"]["vocab"]
    by_id = {i: t for t, i in vocab.items()}
    words = []
    for i in case["input_ids"]:
        t = by_id[i]
        if t in ("[CLS]", "[SEP]", "[PAD]"):
            continue
        if t.startswith("##") and words:
            words[-1] += t[2:]
        else:
            words.append(t)
    return " ".join(words)


def cmd_golden(a):
    golden = json.load(open(a.golden, encoding="utf-8"))
    cases = golden["cases"]
    max_length = golden.get("max_length", 128)
    texts = [truncated_text(c, max_length, os.path.join(a.model, "tokenizer.json")) for c in cases]
    truncated = sum(t != c["text"] for t, c in zip(texts, cases))
    default = GOLDEN_TOL_GPU if a.device.startswith("cuda") else GOLDEN_TOL
    tol = a.tol if a.tol is not None else default[a.dtype]
    cmd = [a.agent, "classify", "--json", "--model", a.model, "--weights", "hub",
           "--device", a.device, "--dtype", a.dtype, *texts]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, RUST_LOG="warn"))
    seconds = time.monotonic() - t0
    result = {"dtype": a.dtype, "device": a.device, "tolerance": tol, "seconds": seconds,
              "golden": a.golden, "cases": len(cases), "truncated_cases": truncated, "passed": False}
    base = os.path.splitext(a.json)[0]
    with open(base + ".agent.json", "w", encoding="utf-8") as f:
        f.write(proc.stdout)
    if proc.stderr.strip():
        print(proc.stderr.strip(), file=sys.stderr)
    try:
        if proc.returncode != 0:
            raise ValueError(f"the agent's classify exited {proc.returncode}: "
                             + (proc.stderr.strip().splitlines() or ["no message"])[-1])
        got = json.loads(proc.stdout)
        if [r["text"] for r in got] != texts:
            raise ValueError("the agent answered for other texts than the golden ones")
        worst, worst_text, agree = 0.0, None, 0
        for c, r in zip(cases, got):
            if len(r["logits"]) != len(c["logits"]):
                raise ValueError(f"{len(r['logits'])} logits for {c['text']!r}, golden has {len(c['logits'])}")
            d = max(abs(x - y) for x, y in zip(r["logits"], c["logits"]))
            if not d <= worst:  # NaN counts as the worst
                worst, worst_text = d, c["text"]
            agree += r["label"] == c["label"]
        result.update(max_abs_diff=worst, worst_text=worst_text, labels_agree=agree,
                      passed=bool(worst <= tol and agree == len(cases)))
    except (ValueError, KeyError, TypeError) as e:
        result["error"] = str(e)
    json.dump(result, open(a.json, "w", encoding="utf-8"), indent=1)
    if "error" in result:
        print(f"golden {a.device} {a.dtype}: ERROR: {result['error']}")
        sys.exit(1)
    print(f"golden {a.device} {a.dtype}: max |agent - transformers| = {result['max_abs_diff']:.3e} "
          f"(tolerance {tol:g}) over {len(cases)} texts ({truncated} given as truncated to {max_length} "
          f"tokens), labels agree {result['labels_agree']}/{len(cases)}, "
          f"classify took {seconds:.1f} s: {'PASS' if result['passed'] else 'FAIL'}")
    if not result["passed"]:
        print(f"  worst text: {result['worst_text'][:200]!r}")
        sys.exit(1)


# --------------------------------------------------------------------- matmul

def cmd_matmul(a):
    import torch
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    # "f32" means true float32: no TF32 tensor-core shortcut.
    torch.backends.cuda.matmul.allow_tf32 = False
    n = a.size
    out = {"device": str(dev), "size": n, "torch": torch.__version__,
           "device_name": torch.cuda.get_device_name(dev) if cuda else "cpu", "rates": {}}
    for name, dtype in (("bf16", torch.bfloat16), ("f32", torch.float32)):
        x = torch.randn(n, n, device=dev, dtype=dtype)
        y = torch.randn(n, n, device=dev, dtype=dtype)
        z = torch.empty(n, n, device=dev, dtype=dtype)

        def timed(iters):
            if cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(iters):
                    torch.matmul(x, y, out=z)
                end.record()
                end.synchronize()
                return start.elapsed_time(end) / 1e3
            t0 = time.perf_counter()
            for _ in range(iters):
                torch.matmul(x, y, out=z)
            return time.perf_counter() - t0

        timed(2)  # warm-up: cuBLAS heuristics, clocks
        per = timed(3) / 3
        iters = max(3, int(a.seconds / per))
        rates = [2.0 * n**3 * iters / timed(iters) / 1e12 for _ in range(3)]
        out["rates"][name] = {"tflops": max(rates), "tflops_runs": rates, "iterations": iters}
        print(f"matmul {dev} {name} {n}x{n}: {max(rates):8.2f} TFLOP/s (best of 3 runs of {iters}: "
              + ", ".join(f"{r:.2f}" for r in rates) + ")", flush=True)
        del x, y, z
        if cuda:
            torch.cuda.empty_cache()
    json.dump(out, open(a.json, "w", encoding="utf-8"), indent=1)


# ------------------------------------------------------------------- reading

def flops_per_sample(hidden, layers, intermediate, seq_len, labels=2):
    """common/src/flops.rs: per layer 8sd^2 + 4sdh + 4s^2d, head 2d^2 + 2d*labels."""
    d, h, s = float(hidden), float(intermediate), float(seq_len)
    return layers * (8 * s * d * d + 4 * s * d * h + 4 * s * s * d) + 2 * d * d + 2 * d * labels


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def agent_report(folder):
    """The agent's JSON report in a `bench --out` folder, or None."""
    for p in sorted(glob.glob(os.path.join(folder, "*.json"))):
        doc = read_json(p)
        if isinstance(doc, dict) and "points" in doc:
            return doc
    return None


def agent_points(report):
    """{batch: the point's outcome dict (measured) or {'status': 'failed', ...}}."""
    if not report:
        return {}
    return {p["batch_size"]: dict(p.get("outcome", {}), seq_len=p.get("seq_len")) for p in report["points"]}


def measured(outcome):
    return outcome is not None and outcome.get("status") == "measured"


def parse_utc(stamp):
    """tracing's RFC 3339 stamp or nvidia-smi's "YYYY/MM/DD HH:MM:SS.fff" (run with TZ=UTC)."""
    stamp = stamp.strip()
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ", "%Y/%m/%d %H:%M:%S.%f", "%Y/%m/%d %H:%M:%S"):
        try:
            s = stamp
            if fmt.endswith("%fZ") and "." in s:  # Python takes at most 6 fraction digits
                head, frac = s[:-1].split(".", 1)
                s = f"{head}.{frac[:6]}Z"
            return dt.datetime.strptime(s, fmt).replace(tzinfo=dt.timezone.utc).timestamp()
        except ValueError:
            continue
    return None


TIMED_RE = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+Z)\s.*?\bbatch (\d+) timed\b")
POINT_RE = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+Z)\s.*?\bbatch\s+(\d+): ")


def agent_windows(log_path):
    """{batch: (start, end)} of each point's timed iterations, Unix seconds, from
    the agent's log lines ("batch 8 timed", then "batch    8: ... ms mean")."""
    starts, windows = {}, {}
    for line in read_text(log_path).splitlines():
        m = TIMED_RE.match(line)
        if m:
            starts[int(m.group(2))] = parse_utc(m.group(1))
            continue
        m = POINT_RE.match(line)
        if m and int(m.group(2)) in starts:
            end = parse_utc(m.group(1))
            if starts[int(m.group(2))] is not None and end is not None:
                windows[int(m.group(2))] = (starts[int(m.group(2))], end)
    return windows


def num(text):
    try:
        v = float(text)
        return v if math.isfinite(v) else None
    except ValueError:
        return None


def smi_samples(path):
    """[(t, memory MiB, power W, SM MHz, °C)] from the background nvidia-smi log."""
    rows = []
    for line in read_text(path).splitlines():
        f = [x.strip() for x in line.split(",")]
        if len(f) < 5:
            continue
        t = parse_utc(f[0])
        if t is not None:
            rows.append((t, num(f[1]), num(f[2]), num(f[3]), num(f[4])))
    return rows


def smi_stats(rows, window=None):
    """Max memory, mean power, median SM clock, max temperature of the rows in the window."""
    if window:
        rows = [r for r in rows if window[0] <= r[0] <= window[1]]
    col = lambda i: [r[i] for r in rows if r[i] is not None]  # noqa: E731
    mem, power, clock, temp = col(1), col(2), col(3), col(4)
    return {"samples": len(rows),
            "max_mib": max(mem) if mem else None,
            "mean_w": statistics.mean(power) if power else None,
            "sm_mhz": statistics.median(clock) if clock else None,
            "max_c": max(temp) if temp else None}


def fmt(v, digits=1, scale=1.0):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v / scale:,.{digits}f}"


def median(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(values) if values else None


def table(header, rows):
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---:" if i else "---" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


# -------------------------------------------------------------------- summary

def read_steps(out):
    steps = []
    for line in read_text(os.path.join(out, "steps.tsv")).splitlines():
        f = line.split("\t")
        if len(f) >= 5:
            steps.append({"id": f[0], "title": f[1], "status": f[2], "seconds": num(f[3]), "note": f[4]})
    return steps


def read_meta(out):
    meta = {}
    for line in read_text(os.path.join(out, "meta.tsv")).splitlines():
        k, _, v = line.partition("\t")
        meta[k] = v
    return meta


def smi_query(out):
    """nvidia-smi --query-gpu=name,driver_version,memory.total,power.limit,clocks.max.sm,compute_cap
    --format=csv: the first GPU's values, units stripped."""
    lines = [l for l in read_text(os.path.join(out, "nvidia-smi-query.csv")).splitlines() if l.strip()]
    if len(lines) < 2:
        return {}
    keys = [re.sub(r"\s*\[.*\]$", "", k.strip()) for k in lines[0].split(",")]
    vals = [v.strip() for v in lines[1].split(",")]
    return dict(zip(keys, vals))


def strip_unit(v):
    m = re.match(r"^\s*([-+0-9.]+)", v or "")
    return float(m.group(1)) if m else None


def section_machine(lines, out, meta, steps):
    smi = smi_query(out)
    info = read_json(os.path.join(out, "agent-info.json")) or {}
    gpu = (info.get("gpus") or [{}])[0]
    smi_txt = read_text(os.path.join(out, "nvidia-smi.txt"))
    m = re.search(r"CUDA Version:\s*([\d.]+)", smi_txt)
    lines += ["## Machine", ""]
    if meta.get("mode") == "gpu":
        lines.append(f"- GPU: {smi.get('name') or gpu.get('name') or '?'} (compute "
                     f"{smi.get('compute_cap') or gpu.get('compute_capability') or '?'}), driver "
                     f"{smi.get('driver_version') or gpu.get('driver_version') or '?'}, CUDA "
                     f"{m.group(1) if m else gpu.get('cuda_version') or '?'} (driver's)")
    else:
        lines.append("- GPU: no GPU (CPU path: `--device cpu`)")
    lines.append(f"- host: {info.get('hostname', '?')}, {info.get('cpu_model', '?')}, "
                 f"{info.get('cpu_logical_cores', '?')} logical CPUs, "
                 f"{fmt(info.get('memory_bytes'), 0, 2**30)} GiB")
    lines.append(f"- agent: {meta.get('agent_version', '?')}"
                 + (f", {info['cuda_build']}" if info.get("cuda_build") else "")
                 + f"; `{meta.get('agent', '?')}`")
    lines.append(f"- PyTorch: {meta.get('torch', '?')}")
    lines.append(f"- date: {meta.get('started', '?')} (UTC); total {meta.get('elapsed', '?')} s "
                 f"of a {meta.get('budget', '?')} s budget")
    lines.append(f"- sweep settings: seq {meta.get('seq_len')}, {meta.get('warmup')} warm-up + "
                 f"{meta.get('iterations')} timed iterations, batch sizes {meta.get('batch_sizes')}; "
                 f"minimum timed seconds per point: {meta.get('min_time_note', '-')}")
    lines.append("")


def section_steps(lines, steps):
    lines += ["## Steps (elapsed time each)", ""]
    lines += table(["step", "what", "status", "seconds", "note"],
                   [(s["id"], s["title"], s["status"], fmt(s["seconds"]), s["note"] or "") for s in steps])
    lines.append("")


def section_info(lines, out, meta):
    lines += ["## fleetbench-agent info vs nvidia-smi", ""]
    info = read_json(os.path.join(out, "agent-info.json"))
    if meta.get("mode") != "gpu":
        if info is None:
            said = "no `info --json` output"
        else:
            said = info.get("gpu_note") or f"{len(info.get('gpus') or [])} GPU(s)"
        lines += [f"no GPU: nvidia-smi not run; the agent's info says: {said}", ""]
        return
    smi = smi_query(out)
    if not info or not info.get("gpus"):
        lines.append(f"the agent's info lists no GPU ({(info or {}).get('gpu_note') or 'no info --json output'}); "
                     f"nvidia-smi: {smi.get('name', 'no answer')}")
        lines.append("")
        return
    g = info["gpus"][0]
    smi_txt = read_text(os.path.join(out, "nvidia-smi.txt"))
    m = re.search(r"CUDA Version:\s*([\d.]+)", smi_txt)
    rows = []

    def row(field, mine, theirs, same):
        rows.append((field, mine if mine not in (None, "") else "-", theirs if theirs not in (None, "") else "-",
                     "-" if mine in (None, "") or theirs in (None, "") else ("yes" if same else "**NO**")))

    row("name", g.get("name"), smi.get("name"), g.get("name") == smi.get("name"))
    row("driver", g.get("driver_version"), smi.get("driver_version"),
        g.get("driver_version") == smi.get("driver_version"))
    mem_a = g.get("memory_total_bytes")
    mem_s = strip_unit(smi.get("memory.total"))
    row("memory total MiB", fmt(mem_a, 0, MIB) if mem_a else None, fmt(mem_s, 0) if mem_s else None,
        mem_a is not None and mem_s is not None and abs(mem_a / MIB - mem_s) <= 1)
    pl_a, pl_s = g.get("power_limit_watts"), strip_unit(smi.get("power.limit"))
    row("power limit W", fmt(pl_a, 0) if pl_a else None, fmt(pl_s, 0) if pl_s else None,
        pl_a is not None and pl_s is not None and abs(pl_a - pl_s) <= 1)
    row("compute capability", g.get("compute_capability"), smi.get("compute_cap"),
        g.get("compute_capability") == smi.get("compute_cap"))
    row("CUDA (driver)", g.get("cuda_version"), m.group(1) if m else None,
        m is not None and g.get("cuda_version") == m.group(1))
    row("max SM clock MHz", None, fmt(strip_unit(smi.get("clocks.max.sm")), 0) if smi.get("clocks.max.sm") else None, True)
    pcie = f"gen {g.get('pcie_generation')} x{g.get('pcie_width')}" if g.get("pcie_generation") else None
    row("PCIe", pcie, None, True)
    lines += table(["field", "agent info --json", "nvidia-smi", "agree"], rows)
    if len(info["gpus"]) > 1:
        lines.append(f"\n(the agent lists {len(info['gpus'])} GPUs; the first is compared)")
    lines.append("")


def section_golden(lines, out, meta):
    tols = GOLDEN_TOL_GPU if meta.get("device", "").startswith("cuda") else GOLDEN_TOL
    lines += ["## Golden texts (tiny fixture; Hugging Face transformers' f32 logits)", "",
              "Tolerances on max |agent - transformers| over the logits: "
              + ", ".join(f"{k} {v:.0e}" for k, v in tols.items())
              + " (the CPU golden tests measured f16 9.2e-3, bf16 4.7e-2; GPU tolerances: see "
              "GOLDEN_TOL_GPU in bench/gpu/gpucheck.py); every label must agree too.", ""]
    rows = []
    for dtype in meta.get("golden_dtypes", "").split():
        r = read_json(os.path.join(out, "golden", f"{dtype}.json"))
        if r is None:
            rows.append((dtype, meta.get("device", "?"), "-", f"{tols[dtype]:.0e}", "-", "-",
                         "**no result** (see the step's log)"))
            continue
        rows.append((dtype, r["device"], f"{r['max_abs_diff']:.2e}" if "max_abs_diff" in r else "-",
                     f"{r['tolerance']:.0e}", f"{r.get('labels_agree', '-')}/{r['cases']}", fmt(r.get("seconds")),
                     ("PASS" if r["passed"] else "**FAIL**") + (f": {r['error']}" if r.get("error") else "")))
    lines += table(["dtype", "device", "max abs diff", "tolerance", "labels agree", "classify s", "result"], rows)
    lines.append("")


def point_cells(o, rows_smi, window):
    """Agent-side memory/power cells of one measured point, and nvidia-smi's over its window."""
    s = smi_stats(rows_smi, window) if window and rows_smi else None
    return {
        "pool": fmt(o.get("gpu_pool_peak_bytes"), 0, MIB),
        "nvml": fmt(o.get("gpu_device_bytes"), 0, MIB),
        "w": fmt(o.get("avg_power_watts")),
        "j": fmt(o.get("energy_joules")),
        "method": o.get("energy_method") or "-",
        "c": fmt(o.get("gpu_temperature_c"), 0),
        "mhz": fmt(o.get("sm_clock_mhz"), 0),
        "throttle": ", ".join(o.get("throttle_reasons") or []) or "-",
        "smi_mib": fmt(s["max_mib"], 0) if s and s["samples"] else "-",
        "smi_w": fmt(s["mean_w"]) if s and s["samples"] else "-",
    }


def run_line(label, rows_smi):
    s = smi_stats(rows_smi)
    if not s["samples"]:
        return f"- {label}: no nvidia-smi samples"
    return (f"- {label}: nvidia-smi over the whole run ({s['samples']} samples): max {fmt(s['max_mib'], 0)} MiB, "
            f"mean {fmt(s['mean_w'])} W, median SM {fmt(s['sm_mhz'], 0)} MHz, max {fmt(s['max_c'], 0)} °C")


def section_seed(lines, out, meta):
    lines += ["## Seed sweep (`--weights random`)", ""]
    gpu = meta.get("mode") == "gpu"
    for dtype in meta.get("seed_dtypes", "").split():
        rep = agent_report(os.path.join(out, "reports", dtype))
        lines.append(f"### {dtype}")
        lines.append("")
        if rep is None:
            lines += ["no report (see the step's log)", ""]
            continue
        sid = f"3-seed-{dtype}"
        rows_smi = smi_samples(os.path.join(out, "smi", f"{sid}.csv")) if gpu else []
        windows = agent_windows(os.path.join(out, "logs", f"{sid}.log"))
        dims = rep.get("model", {})
        rows = []
        for b, o in sorted(agent_points(rep).items()):
            if not measured(o):
                rows.append((b, f"**failed**: {o.get('error', '?')}",) + ("",) * 13)
                continue
            c = point_cells(o, rows_smi, windows.get(b))
            gf = flops_per_sample(dims.get("hidden_size", 0), dims.get("layers", 0),
                                  dims.get("intermediate_size", 0), o.get("seq_len") or 0) * o["throughput"] / 1e9
            rows.append((b, fmt(o["throughput"]), fmt(o["latency"]["mean_ms"], 3), o.get("iterations", "-"),
                         fmt(o.get("timed_seconds"), 2), fmt(gf, 0), c["pool"], c["nvml"], c["smi_mib"],
                         c["w"], c["smi_w"], c["j"], c["method"], c["c"], c["mhz"] + " / " + c["throttle"]))
        lines += table(["batch", "samples/s", "mean ms", "iters", "timed s", "GFLOP/s", "agent pool peak MiB",
                        "agent NVML device MiB", "nvidia-smi max MiB", "agent W", "nvidia-smi W", "agent J",
                        "energy method", "agent max °C", "SM MHz / throttle"], rows)
        if gpu:
            lines.append("")
            lines.append(run_line(f"{sid}", rows_smi))
        for n in rep.get("notes") or []:
            lines.append(f"- note: {n}")
        lines.append("")


def compare_runs(out, dtype):
    """Agent and PyTorch results of step 4 for one dtype, by round."""
    agent, torch = {}, {}
    for path in sorted(glob.glob(os.path.join(out, "runs", f"4-agent-{dtype}-r*"))):
        if os.path.isdir(path):
            agent[os.path.basename(path)] = agent_report(path)
    for path in sorted(glob.glob(os.path.join(out, "runs", f"4-torch-{dtype}-r*.json"))):
        torch[os.path.basename(path)[:-5]] = read_json(path)
    return agent, torch


def section_compare(lines, out, meta, shares):
    lines += ["## Agent vs PyTorch eager (same weights, same padded inputs and masks)", ""]
    if meta.get("torch_ok") != "1":
        lines += [meta.get("torch") or "PyTorch not importable: skipped", ""]
        return
    gpu = meta.get("mode") == "gpu"
    lines.append(f"Model: {meta.get('compare_model', '?')}; {meta.get('rounds', '2')} rounds per dtype "
                 "(agent, PyTorch; then PyTorch, agent); samples/s is the median over the rounds, "
                 "memory the largest, power the mean. Ratio > 1: the agent is faster.")
    lines.append("")
    for dtype in meta.get("compare_dtypes", "").split():
        agent, torch = compare_runs(out, dtype)
        lines.append(f"### {dtype}")
        lines.append("")
        if not any(agent.values()) and not any(torch.values()):
            lines += ["no results (see the steps' logs)", ""]
            continue
        batches = sorted({b for r in agent.values() for b in agent_points(r)}
                         | {p["batch_size"] for r in torch.values() if r for p in r.get("points", [])})
        rows = []
        for b in batches:
            a_tp, a_pool, a_nvml, a_smi_mib, a_w, a_smi_w, methods = [], [], [], [], [], [], []
            a_cells = []
            for label, rep in agent.items():
                o = agent_points(rep).get(b)
                if o is not None and not measured(o):
                    a_cells.append("**failed**")
                if not measured(o):
                    continue
                a_tp.append(o["throughput"])
                a_cells.append(fmt(o["throughput"]))
                a_pool.append(o.get("gpu_pool_peak_bytes"))
                a_nvml.append(o.get("gpu_device_bytes"))
                a_w.append(o.get("avg_power_watts"))
                if o.get("energy_method"):
                    methods.append(o["energy_method"])
                if gpu:
                    w = agent_windows(os.path.join(out, "logs", f"{label}.log")).get(b)
                    s = smi_stats(smi_samples(os.path.join(out, "smi", f"{label}.csv")), w) if w else None
                    if s and s["samples"]:
                        a_smi_mib.append(s["max_mib"])
                        a_smi_w.append(s["mean_w"])
            t_tp, t_alloc, t_smi_mib, t_smi_w = [], [], [], []
            for label, rep in torch.items():
                p = next((p for p in (rep or {}).get("points", []) if p["batch_size"] == b), None)
                if p is None:
                    continue
                t_tp.append(p["throughput"])
                t_alloc.append(p.get("peak_allocated_bytes"))
                if gpu and "t_start" in p:
                    s = smi_stats(smi_samples(os.path.join(out, "smi", f"{label}.csv")), (p["t_start"], p["t_end"]))
                    if s["samples"]:
                        t_smi_mib.append(s["max_mib"])
                        t_smi_w.append(s["mean_w"])
            at, tt = median(a_tp), median(t_tp)
            mx = lambda v: max([x for x in v if x is not None], default=None)  # noqa: E731
            mean = lambda v: statistics.mean([x for x in v if x is not None]) if any(x is not None for x in v) else None  # noqa: E731
            ratio = at / tt if at and tt else None
            if b == max(batches):
                shares.setdefault(dtype, {})["batch"] = b
                shares[dtype]["agent"] = at
                shares[dtype]["torch"] = tt
            rows.append((b, fmt(at), "/".join(a_cells) or "-", fmt(tt), "/".join(fmt(x) for x in t_tp) or "-",
                         f"**{ratio:.2f}**" if ratio else "-", fmt(mx(a_pool), 0, MIB), fmt(mx(a_nvml), 0, MIB),
                         fmt(mx(a_smi_mib), 0), fmt(mx(t_alloc), 0, MIB), fmt(mx(t_smi_mib), 0),
                         fmt(mean(a_w)), fmt(mean(a_smi_w)), fmt(mean(t_smi_w)), ", ".join(sorted(set(methods))) or "-"))
        lines += table(["batch", "agent samples/s", "agent rounds", "PyTorch samples/s", "PyTorch rounds",
                        "agent/PyTorch", "agent pool peak MiB", "agent NVML device MiB", "nvidia-smi max MiB (agent)",
                        "PyTorch max allocated MiB", "nvidia-smi max MiB (PyTorch)", "agent W", "nvidia-smi W (agent)",
                        "nvidia-smi W (PyTorch)", "energy method"], rows)
        if gpu:
            lines.append("")
            for label in list(agent) + list(torch):
                lines.append(run_line(label, smi_samples(os.path.join(out, "smi", f"{label}.csv"))))
        lines.append("")
    check = read_text(os.path.join(out, "logs", "4-check-f32.log"))
    m = re.search(r"^== logits check.*$", check, re.M)
    if m:
        lines += [f"Same-weights check: {m.group(0)[3:]}", ""]


def section_matmul(lines, out, meta, shares):
    lines += ["## Matrix-product rate and the bf16 share", ""]
    mm = read_json(os.path.join(out, "matmul.json"))
    if mm is None:
        lines += ["no matmul result" + (f": {meta.get('torch')}" if meta.get("torch_ok") != "1" else ""), ""]
        return
    lines += table(["dtype", "size", "device", "TFLOP/s (best of 3)"],
                   [(k, f"{mm['size']}x{mm['size']}", mm["device_name"], fmt(v["tflops"], 2))
                    for k, v in mm["rates"].items()])
    lines.append("")
    lines.append("f32 is true float32 (TF32 off); timed with CUDA events on a GPU.")
    bf16 = mm["rates"].get("bf16", {}).get("tflops")
    # The bf16 rate of the model: compare step first, the seed sweep otherwise.
    src = shares.get("bf16")
    rep = agent_report(os.path.join(out, "reports", "bf16"))
    dims = (rep or {}).get("model") or {"hidden_size": 768, "layers": 6, "intermediate_size": 3072}
    seq = int(meta.get("seq_len") or 128)
    per = flops_per_sample(dims["hidden_size"], dims["layers"], dims["intermediate_size"], seq)
    lines.append("")
    lines.append(f"DistilBERT FLOP per sample at seq {seq} (common/src/flops.rs formula, "
                 f"d={dims['hidden_size']}, L={dims['layers']}, h={dims['intermediate_size']}): {per / 1e9:.2f} GFLOP.")
    cands = []
    if src and src.get("agent"):
        cands.append((f"agent, step 4 median, batch {src['batch']}", src["agent"]))
    if src and src.get("torch"):
        cands.append((f"PyTorch, step 4 median, batch {src['batch']}", src["torch"]))
    if rep:
        pts = {b: o for b, o in agent_points(rep).items() if measured(o)}
        if pts:
            b = max(pts)
            cands.insert(0 if not cands else 1, (f"agent seed sweep, batch {b}", pts[b]["throughput"]))
    lines.append("")
    if not bf16 or not cands:
        lines += ["no bf16 DistilBERT result to compare", ""]
        return
    rows = []
    for label, tp in cands:
        rate = per * tp / 1e12
        share = rate / bf16
        rows.append((label, fmt(tp), fmt(rate, 1), f"{share:.0%}",
                     ("met" if share >= BF16_SHARE_GOAL else "**not met**") if label.startswith("agent") else "-"))
    lines += table(["bf16 DistilBERT", "samples/s", "TFLOP/s", "share of bf16 matmul",
                    f"goal >= {BF16_SHARE_GOAL:.0%}"], rows)
    if meta.get("mode") != "gpu":
        lines.append("\n(CPU path: these shares only prove the plumbing.)")
    lines.append("")


def section_failures(lines, out, steps):
    lines += ["## Failures", ""]
    bad = [s for s in steps if s["status"] not in ("ok", "skip")]
    skipped = [s for s in steps if s["status"] == "skip"]
    if not bad:
        lines.append("none: every step that ran passed")
    for s in bad:
        log = [l for l in read_text(os.path.join(out, "logs", f"{s['id']}.log")).splitlines() if l.strip()]
        telling = [l for l in log if re.search(r"FAIL|failed|[Ee]rror|MISSING|not found|Traceback|panicked", l)]
        tail = (telling or log)[-3:]
        lines.append(f"- **{s['id']}** ({s['title']}): {s['status']}, {s['note']}; log `logs/{s['id']}.log`")
        lines += [f"    {l[:300]}" for l in tail]
    if skipped:
        lines.append("")
        lines.append("Skipped: " + "; ".join(f"{s['id']} ({s['note']})" for s in skipped))
    lines.append("")


def section_allocator(lines, out):
    """Tuned (pool keeps its memory, no per-allocation events) against
    candle's stock settings, f32, same sweep."""
    tuned = agent_points(agent_report(os.path.join(out, "reports", "f32")))
    stock = agent_points(agent_report(os.path.join(out, "reports", "f32-stock")))
    if not tuned or not stock:
        return
    lines += ["## Allocator settings (f32): tuned vs candle's stock", "",
              "Tuned: the CUDA pool keeps freed memory (release threshold: all) and cudarc records no "
              "per-allocation events. Stock: FLEETBENCH_CUDA_STOCK_ALLOCATOR=1.", ""]
    rows = []
    for b in sorted(set(tuned) & set(stock)):
        t, s = tuned[b], stock[b]
        if measured(t) and measured(s):
            rows.append((b, fmt(t["throughput"]), fmt(s["throughput"]),
                         fmt(t["throughput"] / s["throughput"], 3),
                         fmt(t["latency"]["mean_ms"], 3), fmt(s["latency"]["mean_ms"], 3)))
    lines += table(["batch", "tuned samples/s", "stock samples/s", "tuned/stock", "tuned mean ms",
                    "stock mean ms"], rows)
    lines.append("")


def cmd_summary(a):
    out = a.out
    meta, steps = read_meta(out), read_steps(out)
    failed = [s for s in steps if s["status"] not in ("ok", "skip")]
    ran = [s for s in steps if s["status"] != "skip"]
    over = [s for s in steps if s["status"] == "skip" and "budget" in s["note"]]
    title = "GPU check" if meta.get("mode") == "gpu" else "GPU check, CPU path"
    verdict = "FAIL" if failed else ("PASS, INCOMPLETE" if over else "PASS")
    lines = [f"# {title}: {verdict} ({len(ran) - len(failed)}/{len(ran)} steps that ran passed, "
             f"{len(steps) - len(ran)} skipped" + (f", {len(over)} of them for the time budget" if over else "")
             + ")", ""]
    shares = {}
    section_machine(lines, out, meta, steps)
    section_info(lines, out, meta)
    section_golden(lines, out, meta)
    section_seed(lines, out, meta)
    section_allocator(lines, out)
    compare_lines = []
    section_compare(compare_lines, out, meta, shares)
    lines += compare_lines
    section_matmul(lines, out, meta, shares)
    section_steps(lines, steps)
    section_failures(lines, out, steps)
    text = "\n".join(lines).rstrip() + "\n"
    with open(os.path.join(out, "summary.md"), "w", encoding="utf-8") as f:
        f.write(text)
    try:
        print(text, flush=True)
    except BrokenPipeError:
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("unxz")
    p.add_argument("src")
    p.add_argument("dst")
    p.set_defaults(fn=cmd_unxz)
    p = sub.add_parser("libdirs")
    p.set_defaults(fn=cmd_libdirs)
    p = sub.add_parser("golden")
    p.add_argument("--agent", required=True)
    p.add_argument("--model", required=True, help="the fixture directory")
    p.add_argument("--golden", required=True, help="golden.json")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="f32", choices=sorted(GOLDEN_TOL))
    p.add_argument("--tol", type=float, help="default: per dtype, " + str(GOLDEN_TOL))
    p.add_argument("--json", required=True, help="where the result goes")
    p.set_defaults(fn=cmd_golden)
    p = sub.add_parser("matmul")
    p.add_argument("--device", default="cuda")
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--seconds", type=float, default=0.5, help="about this long per timed run (3 runs per dtype)")
    p.add_argument("--json", required=True)
    p.set_defaults(fn=cmd_matmul)
    p = sub.add_parser("summary")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_summary)
    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
