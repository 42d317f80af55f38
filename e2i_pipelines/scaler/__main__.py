"""``python -m e2i_pipelines.scaler dry-run``."""

import sys

from e2i_pipelines.scaler.cli import main

sys.exit(main())
