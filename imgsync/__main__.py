from imgsync.cli import main

raise SystemExit(main())
