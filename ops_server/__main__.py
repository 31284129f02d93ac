import sys

from ops_server.server import main

sys.exit(main())
