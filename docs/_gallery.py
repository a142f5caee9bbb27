"""How the tutorials' figures are drawn when the site is built (sphinx-gallery's ``reset_modules``).

Before each tutorial, sphinx-gallery restores matplotlib's defaults ("matplotlib" in
``reset_modules``); :func:`projector_figures` then sets what the site wants on top of them.  A
tutorial run as a plain script keeps matplotlib's (or the user's) settings.
"""
import matplotlib

PROJECTOR_RC = {
    # Images of 150 dots per inch: a 6.4 x 4.8 inch figure is 960 x 720 pixels, sharp on a
    # projector or a high-density screen (matplotlib's default, 100, gives 640 x 480).
    "savefig.dpi": 150,
}


def projector_figures(gallery_conf, fname):
    matplotlib.rcParams.update(PROJECTOR_RC)
