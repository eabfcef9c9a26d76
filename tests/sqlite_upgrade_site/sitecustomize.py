"""Put on a test-started process's PYTHONPATH by tests/sqlite_upgrade_support.py: watch its SQLite transactions too."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
try:
    from sqlite_upgrade_support import install_from_environment
finally:
    del sys.path[0]
install_from_environment()
