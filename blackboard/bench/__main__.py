"""`python -m blackboard.bench`."""

import sys

from blackboard.bench import main

sys.exit(main())
