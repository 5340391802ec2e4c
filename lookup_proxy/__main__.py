"""Allow ``python -m lookup_proxy`` where the console script is not on PATH."""

from lookup_proxy.cli import main

raise SystemExit(main())
