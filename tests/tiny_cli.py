"""`stepcli` with the tests' tiny open_clip config registered: for child processes and torchrun.

python tests/tiny_cli.py extract --backbone openclip:stepcli-test-vit ...
torchrun --nproc_per_node=2 tests/tiny_cli.py extract ...
"""

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import register_tiny_openclip  # noqa: E402

from stepcli.cli import main  # noqa: E402

if __name__ == "__main__":
    register_tiny_openclip(Path(tempfile.mkdtemp()))
    main(sys.argv[1:])
