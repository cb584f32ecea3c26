"""One module per ``atomgfm`` verb; :func:`atomgfm.cli.main.build_parser` finds them all.

A verb module defines ``HELP`` (one line for ``atomgfm --help``), ``ORDER`` (its place in that
list), ``add_arguments(parser)`` and ``run(args) -> int``. Adding a verb is adding a module here:
there is no list to edit.
"""
