from deliverytrack.streams.cli import main

raise SystemExit(main())
