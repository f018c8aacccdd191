import sys

from feature_complexity.cli import main

sys.exit(main())
