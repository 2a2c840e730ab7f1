"""``python -m vla_reference.parity``."""

from ._sharded import main

raise SystemExit(main())
