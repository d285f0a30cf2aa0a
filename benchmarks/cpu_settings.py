"""Which CPU settings pay for a VGG training step here: ratios against fp32 NCHW eager.

Times SGD steps of a model on random data (batch 128) for fp32/bf16 autocast, NCHW/channels_last
and optionally torch.compile, all in this one process, interleaved in rounds so that a shared
machine's drift hits every arm. An absolute time is not a result; the ratio column is.
The ``auto`` row is what ``train.precision: auto`` / ``train.channels_last: auto`` resolve to
here (vgglab.speed, its probe run afresh), timed as an arm of its own.
The first line names the machine (CPU, its capability, native bf16 or not, torch). ``--probes N``
first runs N fresh probes in a row and says whether their verdicts agree (issue 22).

    python benchmarks/cpu_settings.py [--model vgg16_cifar] [--steps 6] [--rounds 2] [--compile] [--probes 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from vgglab import create_model
from vgglab.machine import machine_label
from vgglab.speed import resolve_speed


def make_step(model_name: str, precision: str, channels_last: bool, compile_: bool, batch: int):
    torch.manual_seed(0)
    model = create_model(model_name)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    size = model.config.input_size
    x = torch.randn(batch, model.config.in_chans, size, size).contiguous(memory_format=fmt)
    y = torch.randint(0, model.config.num_classes, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    run = torch.compile(model) if compile_ else model

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(run(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vgg16_cifar")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per arm per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile arms (slow to compile)")
    ap.add_argument(
        "--skip-emulated-bf16",
        action="store_true",
        help="time bf16 arms only where bf16 is native (emulated, each step takes ~20x longer and auto never picks it)",
    )
    ap.add_argument("--probes", type=int, default=3, help="fresh probes in a row, each printed: the verdict must not flip")
    args = ap.parse_args()
    verdicts = []
    for _ in range(max(1, args.probes)):
        with tempfile.TemporaryDirectory() as fresh:  # a new probe, not an earlier verdict
            auto = resolve_speed("auto", "auto", create_model(args.model), args.batch, torch.device("cpu"), cache_dir=fresh)
        verdicts.append((auto.precision, auto.channels_last))
        print(f"fresh probe {len(verdicts)}: {auto.header('auto', 'auto')}")
    print(
        f"{len(verdicts)} fresh probes {'agree' if len(set(verdicts)) == 1 else 'DISAGREE'}: "
        + ", ".join(f"{p} {'channels_last' if cl else 'NCHW'}" for p, cl in verdicts)
    )
    precisions = ("fp32", "bf16") if auto.machine["native_bf16"] or not args.skip_emulated_bf16 else ("fp32",)
    arms = [(p, cl, False) for p in precisions for cl in (False, True)]
    if args.compile:  # inductor's CPU code; bf16 only where it is native (emulated it is hopeless anyway)
        arms += [("fp32", cl, True) for cl in (False, True)] + ([("bf16", True, True)] if auto.machine["native_bf16"] else [])
    print(machine_label(auto.machine))
    print(f"auto: {auto.header('auto', 'auto')}")
    steps = {a: make_step(args.model, *a, args.batch) for a in arms}
    steps["auto"] = make_step(args.model, auto.precision, auto.channels_last, False, args.batch)
    arms.append("auto")
    # emulated bf16 (no native support) takes ~20x longer per step: one step per round is enough to show it
    n_steps = {a: 1 if a != "auto" and a[0] == "bf16" and not auto.machine["native_bf16"] else args.steps for a in arms}
    for a, s in steps.items():  # warm up (and compile) outside the timing
        for _ in range(min(2, n_steps[a] + 1)):
            s()
    rates = {a: [] for a in arms}
    for _ in range(args.rounds):
        for a, s in steps.items():
            t = time.perf_counter()
            for _ in range(n_steps[a]):
                s()
            rates[a].append(n_steps[a] * args.batch / (time.perf_counter() - t))
    base = statistics.median(rates[arms[0]])
    print(f"{args.model}, batch {args.batch}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for arm, r in rates.items():
        m = statistics.median(r)
        if arm == "auto":
            name = f"auto ({auto.precision} {'channels_last' if auto.channels_last else 'NCHW'})"
        else:
            p, cl, comp = arm
            name = f"{p} {'channels_last' if cl else 'NCHW'}{' compiled' if comp else ''}"
        print(f"{name:<28} {m:8.1f} images/s   ratio {m / base:.2f}")
    pinned = {a: statistics.median(r) for a, r in rates.items() if a != "auto" and not a[2]}
    print(
        f"auto / fastest pinned eager: {statistics.median(rates['auto']) / max(pinned.values()):.2f} (auto timed as its own arm)"
    )
    same = (auto.precision, auto.channels_last, False)
    if same in pinned:  # two arms with identical settings differ only by this machine's noise
        print(
            f"auto's setting, {auto.precision} {'channels_last' if auto.channels_last else 'NCHW'}, as pinned / fastest pinned: "
            f"{pinned[same] / max(pinned.values()):.2f}; identical settings timed twice differ by "
            f"{abs(statistics.median(rates['auto']) / pinned[same] - 1):.0%} here"
        )


if __name__ == "__main__":
    main()
