"""``python -m vla_reference.cli``."""

from ._main import main

raise SystemExit(main())
