"""Certification benchmark: what randomized smoothing's CERTIFY costs per scan at the profile's image size and n,
so that the sample size of notebook 46 is chosen on a measurement. CERTIFY's cost depends on the architecture and
the number of noisy forward passes (n0 + n per scan), not on the weights, so the profile's CNN is timed with its
initial weights on a few scans of the profile's size (no data, no trained model needed).

Writes JSON (default benchmarks/results/certify-<profile>.json): seconds per scan for each n of ``--n``, the
largest certifiable radius of each (σ, n) of the profile, and the projected certification time of notebook 46
(every scan certified once, then once more at each empirical radius for the scans still right: at most
1 + radii certifications per scan). Timings compare only within one machine.

    python benchmarks/bench_certify.py --profile full --n 500 10000
"""

from __future__ import annotations

import time

import _common


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--n", type=int, nargs="+", default=None, help="certification sample sizes (default: the "
                        "profile's rs_n)")
    parser.add_argument("--scans", type=int, default=4, help="scans timed per n")
    args = parser.parse_args()

    import numpy as np

    import octlib
    from octlib import defences
    from octlib.estimators import smoothed_classifier
    from octlib.models import build_cnn

    profile = octlib.get_profile(args.profile)
    dcfg, suite = profile.defence, profile.suite
    octlib.set_seed(0)
    model = build_cnn(profile.image_size, profile.train)
    x = np.random.default_rng(0).uniform(0, 1, (args.scans, profile.image_size, profile.image_size, 1))
    x = x.astype(np.float32)
    sigma = dcfg.input_noise_sigmas[0]
    smoothed = smoothed_classifier(model, sigma, n0=dcfg.rs_n0, alpha=dcfg.rs_alpha)
    smoothed.certify(x[:1], n=100, batch_size=1000)  # warm up
    empirical_radii = [r for r in (dcfg.rs_empirical_radii or dcfg.rs_radii) if r > 0]
    report = {"profile": profile.name, "image_size": profile.image_size, "n0": dcfg.rs_n0, "alpha": dcfg.rs_alpha,
              "sigmas": list(dcfg.input_noise_sigmas), "scans_timed": args.scans,
              "notebook_46_scans": suite.randomized_n_scans, "per_n": {}}
    for n in args.n or [dcfg.rs_n]:
        t = time.perf_counter()
        smoothed.certify(x, n=n, batch_size=1000)
        per_scan = (time.perf_counter() - t) / len(x)
        max_radius = {str(s): defences.max_certifiable_radius(s, n, dcfg.rs_alpha) for s in dcfg.input_noise_sigmas}
        radii = [r for r in empirical_radii if r <= min(max_radius.values())]
        report["per_n"][str(n)] = {
            "certify_s_per_scan": round(per_scan, 3),
            "max_certifiable_radius": max_radius,
            "empirical_radii": radii,
            "notebook_46_certify_s_at_most": round(per_scan * suite.randomized_n_scans * (1 + len(radii)), 1)}
        print(f"n = {n}: {per_scan:.2f} s per scan; largest certifiable radius {max_radius}; notebook 46 certifies "
              f"for at most {report['per_n'][str(n)]['notebook_46_certify_s_at_most']:.0f} s")
    print(_common.write_report(report, f"certify-{profile.name}", args.out))


if __name__ == "__main__":
    main()
