"""A stack of layers as the scanner reads them: a layer from a directory (``layer``) or a tar
archive (``tarlayer``) or a directory inside a disk image (``disklayer``), directories too big to hold (``bigdir``), the marker rules that say
what an entry means to overlayfs (``markers``: whiteouts, opaque directories, xattr namespaces),
which marker rules a hand-made layer was written with (``formguess``), entries and the layer
protocol (``entry``), paths deeper than Python's recursion (``deeppath``), compressed archives
unpacked once, within a cap (``unpack``), and opening the layers a user or a store names
(``stack``).

May import: evidence
"""
