from irv2_core.cli import main

raise SystemExit(main())
