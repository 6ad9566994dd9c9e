from usage.app import main

raise SystemExit(main())
