from sysrq_appliance.cli import main

raise SystemExit(main())
