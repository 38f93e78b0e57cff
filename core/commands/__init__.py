"""The command line: ``softgrad train``, ``softgrad evaluate`` and ``softgrad predict`` (the bench and the
conformance kit keep their own ``__main__``); :mod:`.cli` holds what every subcommand shares."""
