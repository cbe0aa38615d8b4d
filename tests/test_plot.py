"""`cnp bench --plot`'s picture: each variant at the paper's MPJPE and its measured img/s.

The figure is read back from matplotlib (the drawn points, texts and legend), not from
pixels; the file itself is checked by its format's signature and its size.
"""

import struct
import sys

import pytest

from scopes import module_unless_mutating
from spec_page import PAPER_PAGE

matplotlib = pytest.importorskip("matplotlib", reason="matplotlib (extra 'plot') is not installed")

from cnp import plot  # noqa: E402  (after the skip: cnp.plot needs matplotlib to draw)

MACHINE = {"cpu": "Test CPU 9000", "torch_threads": 3, "torch": "9.9.9"}
MEASURED = {"xs": (40.0, 90.0), "m": (20.0, 45.0), "l": (12.5, 30.0)}  # variant → (eager, fast) img/s


def results(batch: int = 1) -> list[dict]:
    return [{"variant": variant, "batch": batch,
             "backends": {"eager": {"img_s": eager}, "fast": {"img_s": fast}}}
            for variant, (eager, fast) in MEASURED.items()]


@pytest.fixture(scope=module_unless_mutating)
def drawn(tmp_path_factory):
    """The figure plot_mpjpe_vs_throughput drew (kept from being closed) and its file."""
    plt = plot.require_matplotlib()
    figures = []
    path = tmp_path_factory.mktemp("plot") / "p.png"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(plt, "close", figures.append)
        plot.plot_mpjpe_vs_throughput(results(batch=8), MACHINE, path)
    (figure,) = figures
    yield figure.axes[0], path
    plt.close(figure)


def scattered(axes, filled: bool) -> list:
    """The point collections with filled markers (fast) or hollow ones (eager)."""
    def is_filled(collection) -> bool:
        faces = collection.get_facecolors()
        return len(faces) > 0 and all(face[3] > 0 for face in faces)
    return [c for c in axes.collections if is_filled(c) == filled]


def offsets(collections: list) -> list[tuple[float, float]]:
    return sorted(tuple(float(v) for v in point) for c in collections for point in c.get_offsets())


def test_plot_puts_eager_hollow_at_paper_mpjpe_and_measured_throughput(drawn):
    axes, _ = drawn
    assert offsets(scattered(axes, filled=False)) == sorted((eager, PAPER_PAGE[v]["mpjpe"]) for v, (eager, _) in MEASURED.items())


def test_plot_puts_fast_filled_at_paper_mpjpe_and_measured_throughput(drawn):
    axes, _ = drawn
    assert offsets(scattered(axes, filled=True)) == sorted(
        (fast, PAPER_PAGE[v]["mpjpe"]) for v, (_, fast) in MEASURED.items())


def test_plot_joins_each_variants_eager_and_fast_points(drawn):
    axes, _ = drawn
    lines = sorted((tuple(line.get_xdata()), tuple(line.get_ydata())) for line in axes.lines)
    assert lines == sorted(((eager, fast), (PAPER_PAGE[v]["mpjpe"],) * 2)
                           for v, (eager, fast) in MEASURED.items())


def test_plot_names_each_variant_beside_its_fast_point(drawn):
    axes, _ = drawn
    names = {text.get_text(): text.xy for text in axes.texts}
    assert names == {v.upper(): (fast, PAPER_PAGE[v]["mpjpe"]) for v, (_, fast) in MEASURED.items()}


def test_plot_legend_has_one_entry_per_backend(drawn):
    axes, _ = drawn
    labels = [text.get_text() for text in axes.get_legend().get_texts()]
    assert len(labels) == 2
    assert "eager" in labels[0] and "fast" in labels[1]


def test_plot_draws_fast_over_eager_over_the_joining_lines(drawn):
    axes, _ = drawn
    eager = [c.get_zorder() for c in scattered(axes, filled=False)]
    fast = [c.get_zorder() for c in scattered(axes, filled=True)]
    assert max(line.get_zorder() for line in axes.lines) < min(eager) <= max(eager) < min(fast)


def test_plot_axes_say_what_and_in_which_unit(drawn):
    axes, _ = drawn
    x_label, y_label = axes.get_xlabel(), axes.get_ylabel()
    assert "images/s" in x_label and "batch 8" in x_label and "256" in x_label
    assert "MPJPE" in y_label and "mm" in y_label and "Protocol 2" in y_label


def test_plot_title_names_the_machine_threads_and_torch(drawn):
    axes, _ = drawn
    title = axes.get_title()
    assert "Test CPU 9000" in title and "3 threads" in title and "torch 9.9.9" in title
    assert "ConvNeXtPose" in title


def test_plot_leaves_room_around_the_points(drawn):
    axes, _ = drawn
    (x_low, x_high), (y_low, y_high) = axes.get_xlim(), axes.get_ylim()
    xs = [x for eager, fast in MEASURED.values() for x in (eager, fast)]
    mpjpes = [PAPER_PAGE[v]["mpjpe"] for v in MEASURED]
    assert x_low < min(xs) and max(xs) < x_high and y_low < min(mpjpes) and max(mpjpes) < y_high


def test_plot_writes_a_png_of_840_by_540_pixels(drawn):
    _, path = drawn
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert (width, height) == (840, 540)


@pytest.mark.parametrize("suffix, signature", [(".svg", b"<svg"), (".pdf", b"%PDF")])
def test_plot_file_format_follows_its_suffix(suffix, signature, tmp_path):
    path = tmp_path / f"p{suffix}"
    plot.plot_mpjpe_vs_throughput(results(), MACHINE, path)
    assert signature in path.read_bytes()[:400]


def test_plot_closes_its_figure(tmp_path):
    pyplot = plot.require_matplotlib()
    before = len(pyplot.get_fignums())
    plot.plot_mpjpe_vs_throughput(results(), MACHINE, tmp_path / "p.png")
    assert len(pyplot.get_fignums()) == before


def test_plot_never_opens_a_window():
    plot.require_matplotlib()
    assert matplotlib.get_backend().lower() == "agg"


def test_plot_without_matplotlib_says_which_extra_installs_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    with pytest.raises(plot.PlotUnavailable, match=r"matplotlib.*pip install 'cnp\[plot\]'"):
        plot.require_matplotlib()


def test_plot_eager_markers_are_visible_rings(drawn):
    axes, _ = drawn
    for collection in scattered(axes, filled=False):
        assert all(edge[3] > 0 for edge in collection.get_edgecolors()), "eager markers have no edge"
        assert len(collection.get_edgecolors()) > 0


def test_plot_names_sit_beside_their_points(drawn):
    # A few points from the fast point on screen, wherever the data lie.
    axes, _ = drawn
    renderer = axes.figure.canvas.get_renderer()
    for text in axes.texts:
        point = axes.transData.transform(text.xy)
        box = text.get_window_extent(renderer)
        assert abs(box.x0 - point[0]) < 40 and abs(box.y0 - point[1]) < 40, text.get_text()


def presentation(axes) -> dict:
    """What the picture looks like beyond its facts: sizes, colours, fonts, offsets, texts."""
    def rgba(colors) -> list:
        return [[round(float(c), 4) for c in color] for color in colors]

    figure = axes.figure
    return {
        "figure": {"inches": [float(v) for v in figure.get_size_inches()], "dpi": figure.dpi},
        "points": [{"face": rgba(c.get_facecolors()), "edge": rgba(c.get_edgecolors()),
                    "size": [float(s) for s in c.get_sizes()], "zorder": c.get_zorder()}
                   for c in axes.collections[:2]],
        "line": {"color": rgba([matplotlib.colors.to_rgba(axes.lines[0].get_color())]),
                 "zorder": axes.lines[0].get_zorder()},
        "name": {"offset": [float(v) for v in axes.texts[0].xyann], "coords": axes.texts[0].anncoords,
                 "size": axes.texts[0].get_fontsize(), "weight": axes.texts[0].get_fontweight()},
        "texts": {"x": axes.get_xlabel(), "y": axes.get_ylabel(), "title": axes.get_title(),
                  "title_size": axes.title.get_fontsize(),
                  "legend": [t.get_text() for t in axes.get_legend().get_texts()]},
        "grid": {"shown": axes.xaxis.get_gridlines()[0].get_visible(),
                 "alpha": axes.xaxis.get_gridlines()[0].get_alpha()},
        "margins": [float(v) for v in axes.margins()],
    }


def test_plot_presentation_snapshot(drawn, snapshot_json):
    # Catches any change of how the picture looks; `pytest --snapshot-update` accepts one.
    axes, _ = drawn
    assert presentation(axes) == snapshot_json
