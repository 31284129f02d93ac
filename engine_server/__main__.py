import sys

from engine_server.server import main

sys.exit(main())
