"""``python -m radiolib ...`` (also what ``torchrun -m radiolib train ...`` runs)."""

from radiolib.cli import main

raise SystemExit(main())
