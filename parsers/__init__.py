"""One parser module per input format, behind the ``Parser`` protocol (see ``parsers.base``)."""
