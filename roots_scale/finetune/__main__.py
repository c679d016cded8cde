"""`torchrun -m roots_scale.finetune --config CONFIG` (or this file as a script, as launchers run
roots_scale/pretrain.py): the same as `roots-train finetune`."""

import os
import sys

if __package__ in (None, ""):  # run as a script: import the package, not its folder
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from roots_scale.finetune.run import main  # noqa: E402

sys.exit(main())
