import sys

from quasar_vit.cli.main import main

sys.exit(main())
