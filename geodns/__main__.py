import sys

from geodns.entry import main

sys.exit(main())
