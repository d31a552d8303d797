from deliverytrack.streams.cli.entry import main

raise SystemExit(main())
