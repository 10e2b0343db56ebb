"""The one figure style of every notebook: readable fonts, a colour-blind-safe palette, deterministic files.

:class:`energy_utils.reporting.Report` calls :func:`apply` when it is created, so every notebook gets the
same style without a line of its own. A notebook may still pass its own ``figsize`` or colours; anything it
does not set comes from here.

Sizes: matplotlib measures fonts in points and figures in inches, so a font stays readable when the figure is
shown at its own width. ``PAGE_WIDTH_IN`` is the width of a figure that is meant to fill a page or a notebook
column; a figure twice as wide is shrunk to half size when shown at page width (and its text with it).

Determinism: PNG files carry no ``Software`` text, PDF files no ``CreationDate``/``Producer`` (see
:data:`PNG_METADATA`, :data:`PDF_METADATA`, used by ``Report.save_figure``), and ``svg.hashsalt`` is fixed, so
saving the same figure twice gives the same bytes.
"""
from __future__ import annotations

import matplotlib as mpl
from cycler import cycler

PAGE_WIDTH_IN = 7.0          # a figure this wide fills a page at 1:1
FIGURE_DPI = 100             # layout and inline display resolution (independent of the backend in use)
SAVE_DPI = 150               # resolution of the saved PNG files

PNG_METADATA = {"Software": None}
PDF_METADATA = {"CreationDate": None, "Producer": None}


def palette() -> list[str]:
    """seaborn's ``colorblind`` palette (10 colours, distinguishable with the common colour-vision deficiencies)."""
    import seaborn

    return seaborn.color_palette("colorblind").as_hex()


def rc_params() -> dict:
    """The matplotlib settings :func:`apply` installs."""
    return {
        "axes.prop_cycle": cycler(color=palette()),   # "C0", "C1", ... and the default line colours
        "image.cmap": "viridis",                       # perceptually uniform and colour-blind-safe
        "figure.figsize": (PAGE_WIDTH_IN, 0.6 * PAGE_WIDTH_IN),
        "figure.dpi": FIGURE_DPI,
        "savefig.dpi": SAVE_DPI,
        "font.size": 10,
        "axes.titlesize": 11,
        "axes.labelsize": 10,
        "xtick.labelsize": 9,
        "ytick.labelsize": 9,
        "legend.fontsize": 9,
        "figure.titlesize": 12,
        "lines.linewidth": 1.6,
        "lines.markersize": 5,
        "svg.hashsalt": "energy_utils",                # SVG ids do not change between runs
    }


def apply() -> None:
    """Install the style into matplotlib's global settings (idempotent)."""
    mpl.rcParams.update(rc_params())
