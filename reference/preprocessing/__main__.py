"""``python -m vla_reference.preprocessing``."""

from ._cases import main

raise SystemExit(main())
