"""A projection, not a measurement, of the series' time on a Colab T4 GPU, from what is measured here: the victim's
FLOPs per scan (counted from its layers), this CPU's achieved training throughput (timed), the notebooks' CPU times
in the reference manifests (`series-full.json`), and an assumed T4 throughput (stated below, with its source).

    projected GPU seconds = CPU seconds x (CPU achieved FLOP/s) / (assumed GPU achieved FLOP/s)

which assumes every notebook's time is spent in the model's forward and backward passes at the same efficiency as
training (attacks are input gradients of the same model; data loading, ART's Python overhead and plotting do not
shrink on a GPU, so the projection is a lower bound of the GPU time). For the full OCT2017 (108,312 training
scans) the victim's training is projected from its FLOPs: 50 epochs x 108,312 scans x 3 forward passes.

    python benchmarks/bench_projection.py --steps 20
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import _common

#: NVIDIA T4: 8.1 TFLOP/s FP32 peak, 65 TFLOP/s FP16 tensor-core peak (NVIDIA T4 datasheet). A small CNN at batch
#: 32 reaches a fraction of peak; assumed here: 30 % of FP32 peak, and 15 % of the FP16 peak under mixed precision.
T4_ASSUMED = {"fp32_tflops_achieved": 0.30 * 8.1, "mixed_tflops_achieved": 0.15 * 65.0,
              "source": "NVIDIA T4 datasheet peaks (8.1 FP32, 65 FP16 tensor TFLOP/s) x assumed efficiency 30% / 15%"}
OCT2017_TRAIN = 108_312


def forward_flops(model) -> int:
    """Multiply-adds x 2 of the Conv2D, SeparableConv2D and Dense layers for one scan."""
    import keras

    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            total += 2 * kh * kw * cin * cout * h * w
        elif isinstance(layer, keras.layers.Dense):
            cin, cout = layer.kernel.shape
            total += 2 * cin * cout
    return int(total)


def main() -> None:
    p = _common.parser(__doc__)
    p.add_argument("--steps", type=int, default=20, help="timed training steps (after 3 warm-up steps)")
    p.add_argument("--note", help="what else ran on the machine (written into the report)")
    args = p.parse_args()
    import keras
    import numpy as np

    import octlib
    from octlib.models import build_cnn
    from octlib.training import compile_model

    profile = octlib.get_profile("full")
    cfg, size = profile.train, profile.image_size
    model = build_cnn(size, cfg)
    compile_model(model, cfg, steps_per_epoch=100)
    flops = forward_flops(model)
    rng = np.random.default_rng(0)
    x = rng.random((cfg.batch_size, size, size, 1), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 4, cfg.batch_size), 4)
    for _ in range(3):
        model.train_on_batch(x, y)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        model.train_on_batch(x, y)
    seconds = time.perf_counter() - t0
    images_per_s = args.steps * cfg.batch_size / seconds
    cpu_tflops = images_per_s * 3 * flops / 1e12
    series = json.loads((_common.RESULTS / "series-full.json").read_text())
    rows = {}
    for nb, cpu_s in series["notebooks"].items():
        rows[nb] = {"cpu_seconds": cpu_s,
                    "projected_t4_fp32_seconds": round(cpu_s * cpu_tflops / T4_ASSUMED["fp32_tflops_achieved"], 1),
                    "projected_t4_mixed_seconds": round(cpu_s * cpu_tflops / T4_ASSUMED["mixed_tflops_achieved"], 1)}
    train_flops = 50 * OCT2017_TRAIN * 3 * flops
    report = {
        "benchmark": "projection of GPU time (not measured on a GPU)", "image_size": size,
        "forward_gflops_per_scan": round(flops / 1e9, 3), "training_gflops_per_scan": round(3 * flops / 1e9, 3),
        "cpu": {"timed_steps": args.steps, "batch_size": cfg.batch_size, "images_per_second": round(images_per_s, 1),
                "achieved_tflops": round(cpu_tflops, 4)},
        "t4_assumed": T4_ASSUMED, "notebooks": rows,
        "full_oct2017_victim_training": {
            "scans": OCT2017_TRAIN, "epochs": 50, "pflops": round(train_flops / 1e15, 2),
            "projected_cpu_hours_here": round(train_flops / (cpu_tflops * 1e12) / 3600, 1),
            "projected_t4_fp32_hours": round(train_flops / (T4_ASSUMED["fp32_tflops_achieved"] * 1e12) / 3600, 2),
            "projected_t4_mixed_hours": round(train_flops / (T4_ASSUMED["mixed_tflops_achieved"] * 1e12) / 3600, 2)},
        "caveat": "A projection: notebook times include data loading, ART's Python overhead, plotting and statistics, "
                  "which a GPU does not speed up; the CPU times are from runs that shared the cores.",
    }
    if args.note:
        report["note"] = args.note
    out = _common.write_report(report, "projection-full", args.out)
    print(json.dumps({k: report[k] for k in ("forward_gflops_per_scan", "cpu", "full_oct2017_victim_training")},
                     indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
