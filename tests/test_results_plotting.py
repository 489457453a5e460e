"""The results store and save_fig."""

import json
import math
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from octlib.plotting import image_grid, save_fig  # noqa: E402
from octlib.results import ResultsError, dumps, list_results, load_results, save_results  # noqa: E402


@dataclass
class Settings:
    eps: float
    steps: int


def test_roundtrip_keeps_numbers_as_numbers(tmp_path):
    metrics = {"acc": np.float32(0.875), "n": np.int64(668), "curve": np.array([0.9, 0.5]), "bad": math.nan}
    path = save_results("20_fgsm", metrics, settings=Settings(2 / 255, 1), seed=0,
                        data={"fingerprint": "abc"}, runtime_s=1.5, notebook="20_attack_fgsm.ipynb",
                        results_dir=tmp_path)
    raw = json.loads(path.read_text())
    assert isinstance(raw["metrics"]["acc"], float) and raw["metrics"]["n"] == 668
    assert raw["metrics"]["bad"] is None and raw["settings"]["steps"] == 1
    rec = load_results("20_fgsm", results_dir=tmp_path)
    assert rec["schema_version"] == 1 and rec["seed"] == 0 and rec["data"]["fingerprint"] == "abc"
    assert rec["versions"]["numpy"] and rec["hardware"]["cpu_count"] and "cpu" in rec["hardware"]
    assert list_results(tmp_path) == ["20_fgsm"]
    assert [p.name for p in tmp_path.iterdir()] == ["20_fgsm.json"]  # no temporary file left


def test_per_scan_columns_are_written_one_line_each(tmp_path):
    scans = 300
    metrics = {"records": [{"eps_255": e, "scan_ids": [f"CNV-{i}-1.jpeg" for i in range(scans)],
                            "loss": np.random.default_rng(e).random(scans), "robust": [True] * scans,
                            "nested": [[1, 2], {"a": []}], "empty": {}} for e in (1, 2)]}
    path = save_results("42_x", metrics, results_dir=tmp_path)
    text = path.read_text()
    record = json.loads(text)
    assert record["metrics"]["records"][1]["loss"] == metrics["records"][1]["loss"].tolist()  # lossless
    assert record["metrics"]["records"][0]["nested"] == [[1, 2], {"a": []}]
    assert record["metrics"]["records"][0]["empty"] == {}
    loss_lines = [line for line in text.splitlines() if '"loss"' in line]
    assert len(loss_lines) == 2 and loss_lines[0].rstrip(",").count(",") == scans - 1  # one line per column
    assert text.count("\n") < 120  # not one line per scan (indent=2 writes ~1,900 here)
    assert '\n  "metrics": {' in text  # objects stay indented
    assert json.loads(dumps({"a": [[]], "b": [], "c": [{}]})) == {"a": [[]], "b": [], "c": [{}]}
    with pytest.raises(ValueError):
        dumps({"x": math.nan})


def test_missing_and_malformed_files_are_clear(tmp_path):
    with pytest.raises(ResultsError, match="Run the notebook"):
        load_results("30_copycat", results_dir=tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ResultsError, match="not valid JSON") as err:
        load_results("bad", results_dir=tmp_path)
    assert "bad.json" in str(err.value)
    (tmp_path / "old.json").write_text(json.dumps({"schema_version": 1, "name": "old"}))
    with pytest.raises(ResultsError, match="lacks"):
        load_results(tmp_path / "old.json")


def test_unstorable_values_and_names_are_refused(tmp_path):
    with pytest.raises(ResultsError, match="metrics.model"):
        save_results("x", {"model": object()}, results_dir=tmp_path)
    with pytest.raises(ResultsError, match="name"):
        save_results("../escape", {}, results_dir=tmp_path)


def test_save_fig_writes_png_at_300_dpi_and_pdf(tmp_path):
    fig = image_grid(np.random.default_rng(0).random((5, 8, 8)), titles=list("abcde"), ncols=3)
    paths = save_fig(fig, "00_test_grid", folder=tmp_path)
    plt.close(fig)
    assert [p.name for p in paths] == ["00_test_grid.png", "00_test_grid.pdf"]
    dpi = Image.open(paths[0]).info["dpi"]
    assert round(dpi[0]) == 300
    assert paths[1].read_bytes().startswith(b"%PDF")
    with pytest.raises(ValueError, match="without an extension"):
        save_fig(fig, "grid.png", folder=tmp_path)


def test_rate_curve_draws_the_wilson_band_of_each_point():
    from octlib.metrics import wilson_interval
    from octlib.plotting import plot_rate_curve

    fig, ax = plt.subplots()
    plot_rate_curve(ax, [0.0, 0.25, 0.5], [0.8, 0.5, 0.0], 50, label="certified")
    band = ax.collections[0].get_paths()[0].vertices
    low, high = wilson_interval(25, 50)
    assert any(abs(v[0] - 0.25) < 1e-9 and abs(v[1] - low) < 1e-9 for v in band)
    assert any(abs(v[0] - 0.25) < 1e-9 and abs(v[1] - high) < 1e-9 for v in band)
    assert 0 < high - low < 0.3 and ax.get_lines()[0].get_label() == "certified"
    plt.close(fig)


def test_save_fig_refuses_a_figure_wider_than_two_a4_columns(tmp_path):
    from octlib.plotting import PAGE_HEIGHT, TWO_COLUMNS, figsize, page_size

    wide, _ = plt.subplots(1, 3, figsize=(12, 4))
    with pytest.raises(ValueError, match=r"'00_wide' is \d+\.\d\d x .*figsize"):
        save_fig(wide, "00_wide", folder=tmp_path)
    assert not list(tmp_path.iterdir())  # nothing written
    assert save_fig(wide, "00_wide", folder=tmp_path, check_page=False)[0].is_file()
    plt.close(wide)
    fits, ax = plt.subplots(figsize=figsize(2, 3))
    ax.plot([1, 2], [3, 4])
    ax.set(title="a title that fits", xlabel="x", ylabel="y")
    width, height = page_size(fits)
    assert width <= TWO_COLUMNS + 0.05 and height <= PAGE_HEIGHT
    save_fig(fits, "00_fits", folder=tmp_path)
    plt.close(fits)
    assert figsize(1) == (3.5, 3.5 * 0.42) and figsize(2, 3) == (7.2, 3.0)
    for bad in ({"columns": 3}, {"columns": 1, "height": 20}):
        with pytest.raises(ValueError, match="columns|height"):
            figsize(**bad)


def test_default_image_grid_fits_two_columns():
    from octlib.plotting import TWO_COLUMNS

    fig = image_grid(np.zeros((12, 8, 8)), ncols=6, size=3)
    assert fig.get_size_inches()[0] <= TWO_COLUMNS + 1e-9
    plt.close(fig)


def test_rate_curve_takes_one_count_per_point():
    from octlib.metrics import wilson_interval
    from octlib.plotting import plot_rate_curve

    fig, ax = plt.subplots()
    plot_rate_curve(ax, [0.5, 0.9], [0.5, 0.9], [10, 100])
    band = ax.collections[0].get_paths()[0].vertices
    for x, k, n in ((0.5, 5, 10), (0.9, 90, 100)):
        low, high = wilson_interval(k, n)
        assert any(abs(v[0] - x) < 1e-9 and abs(v[1] - low) < 1e-9 for v in band)
        assert any(abs(v[0] - x) < 1e-9 and abs(v[1] - high) < 1e-9 for v in band)
    with pytest.raises(ValueError, match="positive scan counts"):
        plot_rate_curve(ax, [0.5], [0.5], [0])
    plt.close(fig)


def test_loss_curve_gets_the_patient_bootstrap_band_of_its_mean():
    from octlib.plotting import loss_interval, plot_records_vs_eps
    from octlib.stats import cluster_bootstrap

    rng = np.random.default_rng(0)
    rows = [{"eps": e / 255, "eps_255": e, "attacked_loss": float(np.mean(loss)), "loss": list(loss),
             "patients": [f"p{i // 2}" for i in range(40)]}
            for e, loss in ((1, rng.exponential(0.5, 40)), (4, rng.exponential(2.0, 40)))]
    fig, ax = plt.subplots()
    plot_records_vs_eps(ax, rows, "attacked_loss")
    band = ax.collections[0].get_paths()[0].vertices
    boot = cluster_bootstrap(rows[1]["loss"], rows[1]["patients"])
    assert (boot["ci_low"], boot["ci_high"]) == loss_interval(rows[1])
    assert boot["ci_low"] < rows[1]["attacked_loss"] < boot["ci_high"]
    assert any(abs(v[0] - 4) < 1e-9 and abs(v[1] - boot["ci_high"]) < 1e-9 for v in band)
    with pytest.raises(ValueError, match="per-scan 'loss'"):
        loss_interval({"attacked_loss": 1.0})
    plt.close(fig)


def test_suite_curves_draw_one_curve_per_model_or_attack():
    from octlib.plotting import suite_curves

    rng = np.random.default_rng(0)

    def row(model, attack, e, acc):
        loss = rng.exponential(1.0, 20)
        return {"model": model, "attack": attack, "eps": e / 255, "eps_255": e, "n": 20, "robust_accuracy": acc,
                "ci_low": acc - 0.1, "ci_high": acc + 0.1, "attacked_loss": float(loss.mean()), "loss": list(loss),
                "patients": list(range(20))}

    rows = [row(m, a, e, acc) for m in ("victim", "defended") for a in ("FGSM", "suite")
            for e, acc in ((1, 0.6), (4, 0.2))]
    fig, axes = suite_curves(rows, vline=(4, "training ε"))
    labels = [line.get_label() for line in axes[0].get_lines()]
    assert labels[:2] == ["victim (n = 20)", "defended (n = 20)"] and "chance" in labels and "training ε" in labels
    assert len(axes[1].get_lines()) == 2 and axes[1].get_yscale() == "log"
    plt.close(fig)
    fig, axes = suite_curves([r for r in rows if r["model"] == "victim"], by="attack", n_in_label=False,
                             styles={"FGSM": ":"}, clean=(0.9, 0.3))
    lines = {line.get_label(): line for line in axes[0].get_lines()}
    assert lines["FGSM"].get_linestyle() == ":" and lines["suite"].get_linestyle() == "-" and "clean" in lines
    plt.close(fig)
    with pytest.raises(ValueError, match="`by`"):
        suite_curves(rows, by="eps")
    with pytest.raises(ValueError, match="No evaluation records"):
        suite_curves([r for r in rows if r["attack"] == "FGSM"])


def test_sweep_curve_starts_from_the_suite_and_marks_convergence():
    from octlib.plotting import sweep_curve

    sweep = {"n": 10, "attacks": ["APGD-CE"], "reached": False, "converged_index": 1,
             "points": [{"steps": 20, "restarts": 1, "robust": 8}, {"steps": 50, "restarts": 1, "robust": 6}]}
    fig, ax = sweep_curve(sweep, 40)
    line = ax.get_lines()[0]
    assert list(line.get_ydata()) == [10 / 40, 8 / 40, 6 / 40]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["suite", "20x1", "50x1"]
    assert "not converged" in ax.get_legend().get_texts()[-1].get_text()
    plt.close(fig)
    fig, ax = sweep_curve({**sweep, "sampled": True, "n_standing": 25}, 40)  # a sample of the standing scans
    assert list(ax.get_lines()[0].get_ydata()) == [1.0, 8 / 10, 6 / 10]
    assert "10 of the 25 scans standing" in ax.get_legend().get_texts()[0].get_text()
    plt.close(fig)


def test_class_colours_stay_apart_for_colour_blind_readers():
    """The class colours stay distinguishable under simulated deuteranopia and protanopia (Machado et al. 2009
    matrices at full severity, applied in linear RGB): every pair differs by more than a small RGB distance."""
    from matplotlib.colors import to_rgb

    from octlib.plotting import CLASS_COLORS

    machado = {"deuteranopia": [[0.367, 0.861, -0.228], [0.280, 0.673, 0.047], [-0.012, 0.043, 0.969]],
               "protanopia": [[0.152, 1.053, -0.205], [0.115, 0.786, 0.099], [-0.004, -0.048, 1.052]]}
    linear = {c: np.array(to_rgb(v)) ** 2.2 for c, v in CLASS_COLORS.items()}
    for name, m in machado.items():
        seen = {c: np.clip(np.asarray(m) @ v, 0, 1) ** (1 / 2.2) for c, v in linear.items()}
        names = list(seen)
        gaps = [np.linalg.norm(seen[a] - seen[b]) for i, a in enumerate(names) for b in names[i + 1:]]
        assert min(gaps) > 0.15, (name, dict(zip(names, gaps)))


def test_cpu_description_reads_the_model_and_the_kernel_picking_features():
    from octlib.provenance import cpu_description

    text = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\nflags\t\t: fpu sse4_2 avx avx2 fma avx512f "
            "avx_vnni\n\nprocessor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n")
    assert cpu_description(text) == {"model": "Intel(R) Xeon(R) Processor",
                                     "features": ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx_vnni"]}
    assert cpu_description("") == {"model": None, "features": []}
    here = cpu_description()
    assert set(here) == {"model", "features"}


def test_saliency_examples_write_each_answer_under_its_map_and_fit_the_page(tmp_path):
    from octlib.plotting import saliency_examples

    rng = np.random.default_rng(0)
    x = rng.random((2, 16, 16))
    masks = x > 0.5
    cams = {"clean": rng.random((2, 16, 16)), "PGD 2/255": rng.random((2, 16, 16))}
    fig = saliency_examples(x, masks, cams, {"PGD 2/255": rng.normal(0, 0.01, (2, 16, 16))},
                            row_titles=["true CNV", "true DME"],
                            answers={"clean": ["CNV", "DME"], "PGD 2/255": ["NORMAL", "CNV"]})
    axes = np.array(fig.axes).reshape(2, 4)
    assert [ax.get_xlabel() for ax in axes[:, 2]] == ["→ NORMAL", "→ CNV"]
    assert axes[1, 1].get_xlabel() == "→ DME" and axes[1, 0].get_ylabel() == "true DME"
    assert axes[0, 3].get_xlabel() == ""  # perturbations carry no answer
    assert save_fig(fig, "60_test_saliency", folder=tmp_path)[0].is_file()  # fits two A4 columns
