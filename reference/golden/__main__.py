"""``python -m vla_reference.golden``."""

from ._builder import main

raise SystemExit(main())
