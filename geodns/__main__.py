import sys

from geodns.early import main

sys.exit(main())
