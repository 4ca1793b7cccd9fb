import sys

if sys.argv[1:2] == ["serve"]:
    # First of all (importing the rest takes a while): a SIGHUP while the
    # node starts must not kill it.
    from geodns.server import early

    early.install()

from geodns.cli import main

sys.exit(main())
